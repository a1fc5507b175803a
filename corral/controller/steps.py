"""The task steps of a VM's life: spawn, release-cleanup, terminate, sweep — and their rollbacks.

Every step runs inside a task of the engine that holds the VM's exclusive lock (``vm/<name>``),
and pushes its rollback BEFORE it changes the world: ``vm.spawn`` pushes "terminate whatever the
backend created" before it asks the backend to create anything. Steps check the VM's state in
the store (a read, or conditional writes) and change nothing when it is no longer in the state
they expect, so a recovered or duplicated task is harmless. ``ctx.deps`` is the
:class:`corral.controller.Controller`; steps reach it only through :class:`VMHooks`. This module
must not decide anything about pools (that is :mod:`corral.pools.allocation`) nor call a backend
except through its ``GuardedBackend``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

from corral import exceptions
from corral.backends.base import Capability, Fence, Handle, PollResult, PollStatus, VMSpec
from corral.backends.guard import GuardedBackend
from corral.pools.config import PoolConfig
from corral.pools.lifecycle import DEAD_VM_STATES, VMEvent, VMState
from corral.store import Store
from corral.store.pools import LockFence, VMRow, WriteFence
from corral.tasks import JobContext, StepRegistry
from corral.types import JSON

REGISTRY = StepRegistry()
"""The steps the controller's tasks are made of."""

TERMINATE_REQUESTED = "terminate requested"
"""The reason recorded on a VM an operator asked to terminate."""


class VMHooks(Protocol):
    """What the steps need from the controller (``ctx.deps``)."""

    store: Store
    clock: Callable[[], float]

    def backend(self, pool: str) -> GuardedBackend:
        """The guarded backend of ``pool``."""
        ...

    def pool_config(self, pool: str) -> PoolConfig:
        """The configuration of ``pool``."""
        ...

    async def apply_vm(
        self,
        name: str,
        event: VMEvent,
        *,
        current: str | None = None,
        fence: WriteFence | None = None,
        **changes: object,
    ) -> VMRow | None:
        """Move VM ``name`` by ``event`` (the lifecycle's conditional write and its effects);
        the new row, or ``None`` when the VM was not in a state the event applies to."""
        ...

    def lock_fence(self, key: str, token: int | None) -> LockFence | None:
        """The fence of a write made under lock ``key`` granted with ``token`` (``None`` where
        the store cannot check it)."""
        ...

    async def spawn_finished(
        self, pool: str, ok: bool, seconds: float | None, reason: str | None = None
    ) -> None:
        """Account a spawn's outcome (statistics, backoff, top-up; ``reason`` of a failure)."""
        ...

    def terminate_later(self, name: str, delay: float) -> None:
        """Submit a new termination task for ``name`` after ``delay`` seconds."""
        ...

    def note_failure(self, name: str, reason: str) -> None:
        """Remember why the spawn of ``name`` failed (its rollback records it on the VM)."""
        ...

    def take_failure(self, name: str) -> str | None:
        """Why the spawn of ``name`` failed, if this process saw it fail (forgotten once read)."""
        ...

    def count(self, pool: str, counter: str, by: int = 1) -> None:
        """Add to a pool's statistics counter."""
        ...

    def fence(self, token: int | None) -> Fence | None:
        """The fence of a backend call made under a ``vm/<name>`` grant with ``token``; ``None``
        where tokens are not durable and cluster-wide (an in-process lock manager)."""
        ...


def _hooks(ctx: JobContext) -> VMHooks:
    deps = ctx.deps
    if deps is None or not hasattr(deps, "apply_vm"):
        raise exceptions.TaskError("controller steps need the controller as the engine's deps")
    return cast(VMHooks, deps)


def fence_of(ctx: JobContext, h: VMHooks, name: str) -> Fence | None:
    """The fence of this task's lock on VM ``name``, for the backend calls made under it."""
    return h.fence(ctx.lock_token(f"vm/{name}"))


def _fence(ctx: JobContext, h: VMHooks, name: str) -> LockFence | None:
    """The fence of this task's writes of VM ``name``: its grant of ``vm/<name>`` (issue 11).
    Once the grant is gone (this host's lease lapsed and the lock was freed, a survivor took
    the task over), the store refuses the write (``StaleToken``, logged) and the job fails."""
    key = f"vm/{name}"
    return h.lock_fence(key, ctx.lock_token(key))


def handle_of(row: VMRow) -> Handle:
    """The backend handle of a stored VM; by name alone when the backend never answered."""
    return _parse_handle(row.name, row.handle)


async def _terminate(h: VMHooks, pool: str, handle: Handle, fence: Fence | None) -> None:
    """Terminate until the backend confirms, within the pool's ``terminate_timeout`` (a
    ``StaleFence`` ends it at once: a newer holder of the VM's lock acts on it)."""
    cfg = h.pool_config(pool)
    backend = h.backend(pool)
    failures = 0

    def count(_attempt: int, _exc: exceptions.BackendError) -> None:
        nonlocal failures
        failures += 1

    try:
        async with asyncio.timeout(cfg.terminate_timeout):
            await backend.terminate_until_confirmed(
                handle,
                attempts=None,
                base_delay=0.05,
                max_delay=5.0,
                on_retry=count,
                fence=fence,
            )
    finally:
        if failures:
            h.count(pool, "terminate_failures", failures)


# --- spawn -----------------------------------------------------------------------------------


@REGISTRY.job("vm.spawn")
async def spawn(
    ctx: JobContext,
    *,
    name: str,
    pool: str | None = None,
    id_in_pool: int | None = None,
    created_at: float | None = None,
) -> JSON:
    """Create the VM recorded as ``spawning`` and wait until it is up; then mark it ready.

    ``pool``, ``id_in_pool`` and ``created_at``, when the submitter passed them, save reading the
    VM first; the conditional writes below still refuse a VM that stopped spawning.
    """
    h = _hooks(ctx)
    if pool is None or id_in_pool is None or created_at is None:
        row = await h.store.pools.get_vm(name)
        if row is None or row.state != VMState.SPAWNING:
            return {"skipped": f"VM {name} is no longer spawning"}
        pool, id_in_pool, created_at = row.pool, row.id_in_pool, row.created_at
    await ctx.push_recovery("vm.spawn.undo", name=name)
    cfg = h.pool_config(pool)
    spec = VMSpec(name=name, pool=pool, id_in_pool=id_in_pool, template=cfg.template.as_mapping())
    try:
        handle, result = await _create(ctx, h, spec, cfg)
    except TimeoutError:
        h.note_failure(name, f"spawn timed out after {cfg.spawn_timeout:g} s")
        raise
    except exceptions.CorralError as exc:
        h.note_failure(name, f"{exc.code}: {exc}")
        raise
    now = h.clock()
    # up at the first poll (the script backend's spawn returns once the VM is up): the handle
    # and the ready state are one write; the undo pushed above still covers the spawn
    ready = await h.apply_vm(
        name,
        VMEvent.CAME_UP,
        fence=_fence(ctx, h, name),
        address=result.address,
        ready_at=now,
        handle=handle.to_json(),
    )
    if ready is None:
        raise exceptions.Conflict(f"VM {name} stopped spawning before it came up")
    await h.spawn_finished(pool, True, now - created_at)
    return {"address": result.address}


async def _create(
    ctx: JobContext, h: VMHooks, spec: VMSpec, cfg: PoolConfig
) -> tuple[Handle, PollResult]:
    """Ask the backend for the VM and wait until it is up (within ``spawn_timeout``)."""
    backend = h.backend(spec.pool)
    started = h.clock()
    async with asyncio.timeout(cfg.spawn_timeout):
        handle = await backend.spawn(spec, fence=fence_of(ctx, h, spec.name))
        result = await _first_poll(backend, handle)
        if result is None or result.status is not PollStatus.UP:
            # not up yet: the handle is stored before waiting, so that the rollback of a spawn
            # interrupted now terminates the machine by its handle
            stored = await h.apply_vm(
                spec.name,
                VMEvent.HANDLE_KNOWN,
                fence=_fence(ctx, h, spec.name),
                handle=handle.to_json(),
            )
            if stored is None:
                raise exceptions.Conflict(
                    f"VM {spec.name} stopped spawning while the backend created it"
                )
            if result is None or result.status is PollStatus.PENDING:
                ctx.progress("waiting for the VM to come up")
                remaining = max(0.001, cfg.spawn_timeout - (h.clock() - started))
                result = await backend.wait_up(handle, remaining)
    if result.status is not PollStatus.UP or result.address is None:
        why = result.reason or (
            "the backend gave no address" if result.status is PollStatus.UP else result.status
        )
        raise exceptions.BackendError(f"VM {spec.name} failed to come up: {why}")
    return handle, result


async def _first_poll(backend: GuardedBackend, handle: Handle) -> PollResult | None:
    """One poll right after the spawn; ``None`` when it raised (``wait_up`` polls again)."""
    try:
        return await backend.poll(handle)
    except exceptions.CapabilityMissing:
        raise
    except exceptions.BackendError:
        return None


@REGISTRY.recovery("vm.spawn.undo")
async def spawn_undo(ctx: JobContext, *, name: str) -> JSON:
    """Terminate whatever the backend created for a spawn that did not complete."""
    h = _hooks(ctx)
    row = await h.store.pools.get_vm(name)
    if row is None:
        return None
    requested = row.reason == TERMINATE_REQUESTED
    if row.state == VMState.READY and requested:
        # an operator stopped the spawn just as the VM came up: honour the termination (the
        # termination task this submits waits for this task's lock on the VM)
        await h.apply_vm(
            name, VMEvent.TERMINATE_REQUESTED, current=row.state, fence=_fence(ctx, h, name)
        )
        return None
    if row.state not in (VMState.SPAWNING, VMState.TERMINATING):
        return None  # the spawn completed (ready or beyond): nothing to undo
    if row.state == VMState.SPAWNING:
        reason = h.take_failure(name) or "spawn interrupted (a restart or a stopped task)"
        moved = await h.apply_vm(
            name,
            VMEvent.SPAWN_ABANDONED,
            fence=_fence(ctx, h, name),
            reason=row.reason if requested else reason,
        )
        if moved is None:
            return None
        row = moved
        if not requested:
            await h.spawn_finished(row.pool, False, None, reason)
    await _terminate(h, row.pool, handle_of(row), fence_of(ctx, h, name))
    await h.apply_vm(
        name, VMEvent.TERMINATED if requested else VMEvent.UNDONE, fence=_fence(ctx, h, name)
    )
    return None


# --- release-cleanup -------------------------------------------------------------------------


@REGISTRY.job("vm.release")
async def release(ctx: JobContext, *, name: str) -> JSON:
    """Clean a released VM for its next ticket (if the backend can) and return it to the pool."""
    h = _hooks(ctx)
    row = await h.store.pools.get_vm(name)
    if row is None or row.state != VMState.RELEASING:
        return {"skipped": f"VM {name} is not releasing"}
    await ctx.push_recovery("vm.release.undo", name=name)
    backend = h.backend(row.pool)
    if backend.has(Capability.RELEASE):
        await backend.release(handle_of(row), fence=fence_of(ctx, h, name))
    now = h.clock()
    await h.apply_vm(
        name, VMEvent.CLEANED, fence=_fence(ctx, h, name), ready_at=now, livecheck_failures=0
    )
    return None


@REGISTRY.recovery("vm.release.undo")
async def release_undo(ctx: JobContext, *, name: str) -> JSON:
    """A VM that could not be cleaned is not reused: terminate it (the termination task waits
    for this task's lock on the VM)."""
    h = _hooks(ctx)
    await h.apply_vm(
        name, VMEvent.CLEANUP_ABANDONED, fence=_fence(ctx, h, name), reason="release failed"
    )
    return None


# --- terminate -------------------------------------------------------------------------------


@REGISTRY.job("vm.terminate")
async def terminate(
    ctx: JobContext,
    *,
    name: str,
    pool: str | None = None,
    handle: str | None = None,
    external: bool = False,
) -> JSON:
    """Terminate a VM recorded as ``terminating``, retrying until the backend confirms; an
    ``external`` VM (registered, or being forgotten) is forgotten instead: no backend call.

    ``pool``, ``handle`` (JSON text) and ``external``, when the submitter knew them, save a read;
    termination is idempotent, and the final move only applies to a VM still ``terminating``.
    """
    h = _hooks(ctx)
    if pool is None:
        row = await h.store.pools.get_vm(name)
        if row is None or row.state != VMState.TERMINATING:
            return {"skipped": f"VM {name} is not terminating"}
        pool, target, external = row.pool, handle_of(row), row.external
    else:
        target = _parse_handle(name, handle)
    if external:
        await h.apply_vm(name, VMEvent.FORGOTTEN, fence=_fence(ctx, h, name))
        return {"forgotten": name}
    await ctx.push_recovery("vm.terminate.undo", name=name)
    await _terminate(h, pool, target, fence_of(ctx, h, name))
    await h.apply_vm(name, VMEvent.TERMINATED, fence=_fence(ctx, h, name))
    return None


def _parse_handle(name: str, text: str | None) -> Handle:
    if text is not None:
        try:
            return Handle.from_json(text)
        except exceptions.InvalidInput:
            pass
    return Handle(name=name)


@REGISTRY.recovery("vm.terminate.undo")
async def terminate_undo(ctx: JobContext, *, name: str) -> JSON:
    """A termination cannot be undone: the VM stays ``terminating`` and is tried again later."""
    h = _hooks(ctx)
    row = await h.store.pools.get_vm(name)
    if row is not None and row.state == VMState.TERMINATING:
        h.terminate_later(name, min(30.0, h.pool_config(row.pool).terminate_timeout))
    return None


# --- sweep (reconciliation) ------------------------------------------------------------------


@REGISTRY.job("vm.sweep")
async def sweep(ctx: JobContext, *, pool: str, handle: str) -> JSON:
    """Terminate a machine the backend has but the store does not know (a leak)."""
    h = _hooks(ctx)
    found = Handle.from_json(handle)
    row = await h.store.pools.get_vm(found.name)
    if row is not None and (row.state not in DEAD_VM_STATES or row.state == VMState.FORGOTTEN):
        return {"skipped": f"VM {found.name} is known to the store"}
    await ctx.push_recovery("vm.sweep.undo", pool=pool, handle=handle)
    backend = h.backend(pool)
    async with asyncio.timeout(h.pool_config(pool).terminate_timeout):
        await backend.terminate_until_confirmed(
            found, attempts=None, base_delay=0.05, fence=fence_of(ctx, h, found.name)
        )
    return None


@REGISTRY.recovery("vm.sweep.undo")
async def sweep_undo(ctx: JobContext, *, pool: str, handle: str) -> JSON:
    """Nothing to restore: the next reconciliation finds the machine again if it survived."""
    del ctx, pool, handle
    return None
