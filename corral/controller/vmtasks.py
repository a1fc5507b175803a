"""The controller's bookkeeping of VM tasks: which VM a task of ours works on, submissions,
retries, and the check after a task ends abnormally.

Every spawn, release-cleanup and termination is submitted here as a task tagged ``vm:<name>``
holding ``vm/<name>`` exclusively. This module must not decide when a VM should change state
(that is the controller's and :mod:`corral.pools.allocation`'s job); it only drives tasks.
"""

from __future__ import annotations

import asyncio

from corral import exceptions
from corral.controller import ports
from corral.pools.lifecycle import VMEvent, VMState
from corral.store.pools import VMRow
from corral.tasks import DONE, Step, TaskEvent, TaskState
from corral.types import JSON

TAG_PREFIX = "vm:"

FENCED = frozenset(
    e.code
    for e in (
        exceptions.StaleToken,
        exceptions.StaleEpoch,
        exceptions.StaleFence,
        exceptions.TaskTakenOver,
        exceptions.LeaseLost,
    )
)
"""Codes of a task that ended because this host lost the right to act (issue 11: a store write
or a backend call refused for its stale epoch or token, the task claimed by a survivor, the
host's lease lost): its VM is left to whoever holds that right now (a survivor's recovery, the
lock's next holder, the leader's orphan watch), not checked by this host."""


class VMTasks:
    """Tracks the unfinished tasks of this controller per VM and re-drives VMs left half-way."""

    def __init__(self, controller: ports.VMTasksHost) -> None:
        self._ctl = controller
        self._busy: dict[str, str] = {}
        self._task_vm: dict[str, str] = {}
        self._retries: dict[str, asyncio.TimerHandle] = {}

    # --- queries -----------------------------------------------------------------------------

    def busy(self, name: str) -> bool:
        """Whether an unfinished task of this controller works on VM ``name``."""
        return name in self._busy

    def busy_vms(self) -> set[str]:
        """The VMs an unfinished task of this controller works on."""
        return set(self._busy)

    def task_of(self, name: str) -> str | None:
        """The id of the unfinished task on VM ``name`` (``None``, or ``""`` while submitting)."""
        return self._busy.get(name)

    @property
    def idle(self) -> bool:
        """True when no task of ours runs and no retry is pending."""
        return not self._busy and not self._retries

    # --- submissions -------------------------------------------------------------------------

    async def submit(self, verb: str, step: Step, name: str) -> str:
        """Submit a one-job task on VM ``name`` holding its exclusive lock."""
        tid = await self._ctl.tasks.submit(
            verb,
            jobs=[step],
            locks={f"vm/{name}": "exclusive"},
            tag=f"{TAG_PREFIX}{name}",
            priority="high" if verb == "terminate" else "medium",
            # terminating is idempotent: after a crash, finish it rather than roll it back
            recovery="resume" if verb == "terminate" else "auto",
            # A termination needs no task record: its intent is already durable (the VM was
            # committed as ``terminating`` before this submit), it has nothing to undo, and a
            # terminating VM left without a task is terminated again by reconciliation on
            # start and by the maintenance loop. That saves three store writes per VM.
            persist="none" if verb == "terminate" else "auto",
        )
        # submit() returns before the task's driver first runs, so no "done" event can have
        # been missed here.
        self._busy[name] = tid
        self._task_vm[tid] = name
        return tid

    async def spawn(self, row: VMRow) -> None:
        """Submit the spawn task of a VM just recorded as ``spawning``."""
        name = row.name
        args: dict[str, JSON] = {
            "name": name,
            "pool": row.pool,
            "id_in_pool": row.id_in_pool,
            "created_at": row.created_at,
        }
        self._busy[name] = ""  # reserved until the task id is known
        try:
            await self.submit("spawn", Step("vm.spawn", args), name)
        except BaseException:
            self._busy.pop(name, None)
            raise

    async def terminate(self, name: str, *, row: VMRow | None = None) -> None:
        """Submit a termination task for a VM in ``terminating``.

        With ``row`` (the VM just moved to ``terminating``) the task carries its pool and handle;
        without, the VM is read first and nothing is submitted unless it is terminating.
        """
        if row is None:
            current = await self._ctl.store.pools.get_vm(name)
            if current is None or current.state != VMState.TERMINATING:
                return
            args: dict[str, JSON] = {"name": name}
        else:
            args = {"name": name, "pool": row.pool, "handle": row.handle}
            if row.external:
                args["external"] = True
        await self.submit("terminate", Step("vm.terminate", args), name)

    async def release(self, name: str) -> None:
        """Submit a release-cleanup task for a VM in ``releasing``."""
        await self.submit("release", Step("vm.release", {"name": name}), name)

    # --- retries -----------------------------------------------------------------------------

    def terminate_later(self, name: str, delay: float) -> None:
        """Submit a termination task for ``name`` after ``delay`` seconds (one pending per VM)."""
        if self._ctl.stopped or name in self._retries:
            return

        def fire() -> None:
            self._retries.pop(name, None)
            if not self._ctl.stopped:
                self._ctl.background(self.terminate(name))

        self._retries[name] = asyncio.get_running_loop().call_later(max(0.0, delay), fire)

    def gone(self, name: str) -> None:
        """VM ``name`` is terminated or failed: drop its pending retry."""
        retry = self._retries.pop(name, None)
        if retry is not None:
            retry.cancel()

    def close(self) -> None:
        """Cancel every pending retry."""
        for retry in self._retries.values():
            retry.cancel()
        self._retries.clear()

    # --- task events -------------------------------------------------------------------------

    def note_recovered(self) -> None:
        """After the engine recovered the store's tasks: which VMs they work on."""
        for info in self._ctl.tasks.list():
            if not info.done and info.tag.startswith(TAG_PREFIX):
                name = info.tag[len(TAG_PREFIX) :]
                self._busy[name] = info.id
                self._task_vm[info.id] = name

    def on_task(self, event: TaskEvent) -> None:
        """A task changed state; when one of ours ended, forget it (and check its VM)."""
        if event.state not in DONE:
            return
        info = event.info
        name = self._task_vm.pop(info.id, None)
        if name is not None and self._busy.get(name) == info.id:
            del self._busy[name]
            # a finished job left its VM where it belongs; anything else is checked, unless
            # this host was fenced off the VM (its write refused: not its VM to move now)
            if (
                not self._ctl.stopped
                and event.state is not TaskState.FINISHED
                and info.code not in FENCED
            ):
                self._ctl.background(self.after_task(name))

    async def after_task(self, name: str) -> None:
        """A task on VM ``name`` ended abnormally: make sure the VM is not left half-way."""
        ctl = self._ctl
        if self.busy(name):
            return
        row = await ctl.store.pools.get_vm(name)
        if row is None:
            return
        if row.state in (VMState.SPAWNING, VMState.RELEASING):
            reason = ctl.take_failure(name) if row.state == VMState.SPAWNING else None
            if reason is None:
                await ctl.apply_vm(name, VMEvent.ORPHANED, current=row.state)
            else:
                await ctl.apply_vm(name, VMEvent.ORPHANED, current=row.state, reason=reason)
        elif row.state == VMState.TERMINATING:
            self.terminate_later(name, min(30.0, ctl.pool_config(row.pool).terminate_timeout))
