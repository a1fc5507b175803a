"""What an operator does to pools and VMs: pause, resume and drain a pool, hold a VM for
debugging (Nodepool's hold), and the audit trail of those actions.

A pool's mode is kept in the store (so it survives a restart and every process sharing the store
sees it) and cached here: ``paused`` stops preallocation (ready VMs still serve tickets);
``draining`` also terminates idle VMs and does not reuse released ones, letting VMs in use finish.
A held VM serves nobody and is terminated when its hold expires or is released; holding a VM in
use keeps it once its ticket ends. Every action is recorded in the audit trail with who did it.
State changes go through the lifecycle (:meth:`corral.controller.Controller.apply_vm`); this
module must not call backends.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from corral import exceptions
from corral.controller import ports, records
from corral.pools.lifecycle import VMEvent, VMState, values
from corral.pools.model import VM
from corral.store.pools import AuditEntry, LeaseFence

MAX_HOLD = 7 * 24 * 3600.0
"""The longest hold an operator may ask for (seconds)."""


class PoolMode(StrEnum):
    """How a pool operates."""

    ACTIVE = "active"
    PAUSED = "paused"
    DRAINING = "draining"


class Operators:
    """Pool modes, VM holds and the audit trail of one controller."""

    def __init__(self, controller: ports.OperatorsHost) -> None:
        self._ctl = controller
        self._modes: dict[str, PoolMode] = {}

    # --- pool modes ----------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the pools' modes from the store (on start, and each maintenance round)."""
        found = await self._ctl.store.pools.pool_modes()
        self._modes = {
            pool: PoolMode(mode)
            for pool, mode in found.items()
            if pool in self._ctl.config.pools and mode in PoolMode.__members__.values()
        }

    def mode(self, pool: str) -> PoolMode:
        """The mode of ``pool``."""
        return self._modes.get(pool, PoolMode.ACTIVE)

    async def set_mode(self, pool: str, mode: PoolMode, *, actor: str) -> None:
        """Put ``pool`` in ``mode`` and record who did."""
        self._ctl.config.pool(pool)  # PoolNotFound
        await self._ctl.store.pools.set_pool_mode(
            pool, None if mode is PoolMode.ACTIVE else mode.value
        )
        if mode is PoolMode.ACTIVE:
            self._modes.pop(pool, None)
        else:
            self._modes[pool] = mode
        await self.audit(
            actor, mode.value if mode is not PoolMode.ACTIVE else "resume", "pool", pool
        )
        self._ctl.kick_spawn(pool)
        self._ctl.wake_maintenance()

    async def drain_plan(self, pool: str) -> list[VM]:
        """The VMs a drain of ``pool`` terminates now: its idle ready VMs."""
        self._ctl.config.pool(pool)
        rows = await self._ctl.store.pools.list_vms(pool=pool, states=values([VMState.READY]))
        return [records.vm(r) for r in rows if r.ticket is None]

    async def drain_idle(self, pool: str, *, fence: LeaseFence | None = None) -> int:
        """Terminate the idle ready VMs of a draining pool; how many were (``fence``: the
        pool leader's maintenance, refused by the store once the lease moved)."""
        done = 0
        for vm in await self.drain_plan(pool):
            row = await self._ctl.apply_vm(
                vm.name, VMEvent.RETIRED, fence=fence, reason="pool draining"
            )
            done += row is not None
        return done

    # --- holds ---------------------------------------------------------------------------------

    async def hold(self, name: str, seconds: float, *, actor: str) -> VM:
        """Keep VM ``name`` for debugging for ``seconds``: a ready VM is taken out of service now,
        one in use is kept once its ticket ends (not reused, not terminated) until then."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise exceptions.InvalidInput("hold duration must be a number of seconds")
        if not 0 < seconds <= MAX_HOLD:
            raise exceptions.InvalidInput(f"hold duration must be in (0, {MAX_HOLD:g}] seconds")
        until = self._ctl.clock() + seconds
        vm = await self._get(name)
        if vm.state is VMState.READY and vm.ticket is None:
            row = await self._ctl.apply_vm(
                name, VMEvent.HELD_NOW, current=vm.state, hold_until=until
            )
        elif vm.state in (VMState.IN_USE, VMState.HELD):
            # marks one in use, or extends a hold
            row = await self._ctl.apply_vm(
                name, VMEvent.HOLD_MARKED, current=vm.state, hold_until=until
            )
        else:
            raise exceptions.VMStateMismatch(
                f"VM {name} is {vm.state}: only a ready, in-use or held VM can be held"
            )
        if row is None:
            raise exceptions.Conflict(f"VM {name} changed meanwhile; try again")
        await self.audit(actor, "hold", "vm", name, f"until {until:.0f} ({seconds:g} s)")
        return records.vm(row)

    async def release_hold(self, name: str, *, actor: str) -> VM:
        """End the hold of VM ``name``: a held VM is terminated; one in use is no longer kept."""
        vm = await self._get(name)
        if vm.state is VMState.HELD:
            row = await self._ctl.apply_vm(
                name, VMEvent.HOLD_ENDED, current=vm.state, reason="hold released"
            )
        elif vm.state is VMState.IN_USE and vm.hold_until is not None:
            row = await self._ctl.apply_vm(
                name, VMEvent.HOLD_MARKED, current=vm.state, hold_until=None
            )
        else:
            raise exceptions.VMStateMismatch(f"VM {name} is {vm.state} and not held")
        if row is None:
            raise exceptions.Conflict(f"VM {name} changed meanwhile; try again")
        await self.audit(actor, "release-hold", "vm", name)
        return records.vm(row)

    async def expire_holds(self, pool: str, now: float, *, fence: LeaseFence | None = None) -> int:
        """Terminate the held VMs of ``pool`` whose hold ran out (``fence``: as
        :meth:`drain_idle`)."""
        rows = await self._ctl.store.pools.list_vms(pool=pool, states=values([VMState.HELD]))
        done = 0
        for row in rows:
            if row.hold_until is not None and row.hold_until <= now:
                moved = await self._ctl.apply_vm(
                    row.name,
                    VMEvent.HOLD_ENDED,
                    current=row.state,
                    fence=fence,
                    reason="hold expired",
                )
                done += moved is not None
        return done

    async def _get(self, name: str) -> VM:
        if not isinstance(name, str):
            raise exceptions.InvalidInput("a VM name must be a string")
        row = await self._ctl.store.pools.get_vm(name)
        if row is None:
            raise exceptions.VMNotFound(f"no VM named {name!r}")
        return records.vm(row)

    # --- audit ---------------------------------------------------------------------------------

    async def audit(
        self, actor: str, action: str, kind: str, target: str, detail: str | None = None
    ) -> None:
        """Record an operator's action."""
        await self._ctl.store.pools.add_audit(
            AuditEntry(self._ctl.clock(), actor, action, kind, target, detail)
        )

    async def history(
        self, *, kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> Sequence[AuditEntry]:
        """The latest operator actions, newest first."""
        if kind not in (None, "vm", "pool"):
            raise exceptions.InvalidInput("audit kind must be 'vm' or 'pool'")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 10_000:
            raise exceptions.InvalidInput("limit must be an integer in 1..10000")
        return await self._ctl.store.pools.list_audit(kind=kind, target=target, limit=limit)
