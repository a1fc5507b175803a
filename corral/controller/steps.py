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
from corral.backends.base import Capability, Handle, PollResult, PollStatus, VMSpec
from corral.backends.guard import GuardedBackend
from corral.pools.config import PoolConfig
from corral.store import Store
from corral.store.pools import VMRow
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

    def vm_changed(self, row: VMRow) -> None:
        """A VM changed state: publish it and wake whoever waits for it."""
        ...

    async def spawn_finished(self, pool: str, ok: bool, seconds: float | None) -> None:
        """Account a spawn's outcome (statistics, backoff, top-up)."""
        ...

    def terminate_later(self, name: str, delay: float) -> None:
        """Submit a new termination task for ``name`` after ``delay`` seconds."""
        ...

    def count(self, pool: str, counter: str, by: int = 1) -> None:
        """Add to a pool's statistics counter."""
        ...


def _hooks(ctx: JobContext) -> VMHooks:
    deps = ctx.deps
    if deps is None or not hasattr(deps, "vm_changed"):
        raise exceptions.TaskError("controller steps need the controller as the engine's deps")
    return cast(VMHooks, deps)


def handle_of(row: VMRow) -> Handle:
    """The backend handle of a stored VM; by name alone when the backend never answered."""
    return _parse_handle(row.name, row.handle)


async def _move(h: VMHooks, name: str, expect: list[str], **changes: object) -> VMRow | None:
    now = h.clock()
    changes.setdefault("state_since", now)
    row = await h.store.pools.update_vm(name, expect=expect, changes=changes)
    if row is not None:
        h.vm_changed(row)
    return row


async def _terminate(h: VMHooks, pool: str, handle: Handle) -> None:
    """Terminate until the backend confirms, within the pool's ``terminate_timeout``."""
    cfg = h.pool_config(pool)
    backend = h.backend(pool)
    failures = 0

    def count(_attempt: int, _exc: exceptions.BackendError) -> None:
        nonlocal failures
        failures += 1

    try:
        async with asyncio.timeout(cfg.terminate_timeout):
            await backend.terminate_until_confirmed(
                handle, attempts=None, base_delay=0.05, max_delay=5.0, on_retry=count
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
        if row is None or row.state != "spawning":
            return {"skipped": f"VM {name} is no longer spawning"}
        pool, id_in_pool, created_at = row.pool, row.id_in_pool, row.created_at
    await ctx.push_recovery("vm.spawn.undo", name=name)
    cfg = h.pool_config(pool)
    backend = h.backend(pool)
    started = h.clock()
    spec = VMSpec(name=name, pool=pool, id_in_pool=id_in_pool, template=cfg.template.as_mapping())
    async with asyncio.timeout(cfg.spawn_timeout):
        handle = await backend.spawn(spec)
        result = await _first_poll(backend, handle)
        if result is None or result.status is not PollStatus.UP:
            # not up yet: the handle is stored before waiting, so that the rollback of a spawn
            # interrupted now terminates the machine by its handle
            stored = await h.store.pools.update_vm(
                name, expect=["spawning"], changes={"handle": handle.to_json()}
            )
            if stored is None:
                raise exceptions.Conflict(
                    f"VM {name} stopped spawning while the backend created it"
                )
            if result is None or result.status is PollStatus.PENDING:
                ctx.progress("waiting for the VM to come up")
                remaining = max(0.001, cfg.spawn_timeout - (h.clock() - started))
                result = await backend.wait_up(handle, remaining)
    if result.status is not PollStatus.UP or result.address is None:
        raise exceptions.BackendError(f"VM {name} failed to come up: {result.reason}")
    now = h.clock()
    # up at the first poll (the script backend's spawn returns once the VM is up): the handle
    # and the ready state are one write; the undo pushed above still covers the spawn
    ready = await _move(
        h,
        name,
        ["spawning"],
        state="ready",
        address=result.address,
        ready_at=now,
        handle=handle.to_json(),
    )
    if ready is None:
        raise exceptions.Conflict(f"VM {name} stopped spawning before it came up")
    await h.spawn_finished(pool, True, now - created_at)
    return {"address": result.address}


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
    if row.state == "ready" and requested:
        # an operator stopped the spawn just as the VM came up: honour the termination
        moved = await _move(h, name, ["ready"], state="terminating")
        if moved is None:
            return None
        row = moved
    if row.state not in ("spawning", "terminating"):
        return None  # the spawn completed (ready or beyond): nothing to undo
    if row.state == "spawning":
        moved = await _move(h, name, ["spawning"], state="terminating")
        if moved is None:
            return None
        row = moved
        if not requested:
            await h.spawn_finished(row.pool, False, None)
    await _terminate(h, row.pool, handle_of(row))
    await _move(h, name, ["terminating"], state="terminated" if requested else "failed")
    return None


# --- release-cleanup -------------------------------------------------------------------------


@REGISTRY.job("vm.release")
async def release(ctx: JobContext, *, name: str) -> JSON:
    """Clean a released VM for its next ticket (if the backend can) and return it to the pool."""
    h = _hooks(ctx)
    row = await h.store.pools.get_vm(name)
    if row is None or row.state != "releasing":
        return {"skipped": f"VM {name} is not releasing"}
    await ctx.push_recovery("vm.release.undo", name=name)
    backend = h.backend(row.pool)
    if backend.has(Capability.RELEASE):
        await backend.release(handle_of(row))
    now = h.clock()
    await _move(h, name, ["releasing"], state="ready", ready_at=now, livecheck_failures=0)
    return None


@REGISTRY.recovery("vm.release.undo")
async def release_undo(ctx: JobContext, *, name: str) -> JSON:
    """A VM that could not be cleaned is not reused: terminate it."""
    h = _hooks(ctx)
    moved = await _move(h, name, ["releasing"], state="terminating", reason="release failed")
    if moved is not None:
        h.terminate_later(name, 0.0)
    return None


# --- terminate -------------------------------------------------------------------------------


@REGISTRY.job("vm.terminate")
async def terminate(
    ctx: JobContext, *, name: str, pool: str | None = None, handle: str | None = None
) -> JSON:
    """Terminate a VM recorded as ``terminating``, retrying until the backend confirms.

    ``pool`` and ``handle`` (JSON text), when the submitter knew them, save a read; termination
    is idempotent, and the final move only applies to a VM still ``terminating``.
    """
    h = _hooks(ctx)
    if pool is None:
        row = await h.store.pools.get_vm(name)
        if row is None or row.state != "terminating":
            return {"skipped": f"VM {name} is not terminating"}
        pool, target = row.pool, handle_of(row)
    else:
        target = _parse_handle(name, handle)
    await ctx.push_recovery("vm.terminate.undo", name=name)
    await _terminate(h, pool, target)
    await _move(h, name, ["terminating"], state="terminated")
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
    if row is not None and row.state == "terminating":
        h.terminate_later(name, min(30.0, h.pool_config(row.pool).terminate_timeout))
    return None


# --- sweep (reconciliation) ------------------------------------------------------------------


@REGISTRY.job("vm.sweep")
async def sweep(ctx: JobContext, *, pool: str, handle: str) -> JSON:
    """Terminate a machine the backend has but the store does not know (a leak)."""
    h = _hooks(ctx)
    found = Handle.from_json(handle)
    row = await h.store.pools.get_vm(found.name)
    if row is not None and row.state not in ("terminated", "failed"):
        return {"skipped": f"VM {found.name} is known to the store"}
    await ctx.push_recovery("vm.sweep.undo", pool=pool, handle=handle)
    backend = h.backend(pool)
    async with asyncio.timeout(h.pool_config(pool).terminate_timeout):
        await backend.terminate_until_confirmed(found, attempts=None, base_delay=0.05)
    return None


@REGISTRY.recovery("vm.sweep.undo")
async def sweep_undo(ctx: JobContext, *, pool: str, handle: str) -> JSON:
    """Nothing to restore: the next reconciliation finds the machine again if it survived."""
    del ctx, pool, handle
    return None
