"""The operators' ``/v1`` endpoints (issue 12): pause, resume and drain a pool, hold a VM and end
its hold, the audit trail, reconciliation's dry run and the configuration reload; and (issue 15)
register a machine made elsewhere, forget a VM, return a static machine to service, and the
per-pool key/value info.

Every route needs an admin token but reading pool info, which any caller may; the caller's owner
is the ``actor`` the audit trail records
(``anonymous`` on an open server). This module must not decide anything: it authenticates,
calls the controller facade and renders with :mod:`corral.wire`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Body, Query, Request
from fastapi import Path as PathParam
from pydantic import JsonValue

from corral import exceptions
from corral import wire as models
from corral.api import convert
from corral.api.auth import ANONYMOUS, Principal
from corral.api.errors import ERROR_RESPONSES
from corral.api.routes import Admin, Caller, Ctx, Name
from corral.backends.static_inventory import MachineStatus

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

Reloader = Callable[[str], Awaitable[models.ReloadResult]]
"""What the server puts in ``app.state.reload``: re-read its configuration file and apply it,
recording the given actor (see :class:`corral.api.server.Server`)."""


def actor(caller: Principal) -> str:
    """Who the audit trail says acted."""
    return caller.owner or ANONYMOUS


@router.post("/pools/{name}/pause", tags=["operators"])
async def pause_pool(name: Name, ctx: Ctx, caller: Admin) -> models.PoolMode:
    """Stop preallocating the pool (its ready VMs still serve tickets)."""
    await ctx.controller.pause_pool(name, actor=actor(caller))
    return models.PoolMode(pool=name, mode="paused")


@router.post("/pools/{name}/resume", tags=["operators"])
async def resume_pool(name: Name, ctx: Ctx, caller: Admin) -> models.PoolMode:
    """Undo a pause or a drain: the pool preallocates and reuses again."""
    await ctx.controller.resume_pool(name, actor=actor(caller))
    return models.PoolMode(pool=name, mode="active")


@router.post("/pools/{name}/drain", tags=["operators"])
async def drain_pool(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    dry_run: Annotated[bool, Query(description="Only say which idle VMs would go.")] = False,
) -> models.DrainResult:
    """Drain the pool: stop preallocating, terminate its idle VMs now and every VM in use once
    its ticket ends (no reuse)."""
    found = await ctx.controller.drain_pool(name, actor=actor(caller), dry_run=dry_run)
    return models.DrainResult(pool=name, dry_run=dry_run, terminated=[v.name for v in found])


@router.post("/vms/{name}/hold", tags=["operators"])
async def hold_vm(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    body: Annotated[models.HoldRequest | None, Body()] = None,
) -> models.VM:
    """Keep the VM for debugging (default 24 h): a ready VM leaves service now, one in use is
    kept once its ticket ends; never reused; terminated when the hold ends or is released."""
    seconds = (body or models.HoldRequest()).seconds
    return convert.vm(await ctx.controller.hold_vm(name, seconds, actor=actor(caller)))


@router.post("/vms/{name}/release-hold", tags=["operators"])
async def release_hold(name: Name, ctx: Ctx, caller: Admin) -> models.VM:
    """End the VM's hold: a held VM is terminated; one in use is no longer kept."""
    return convert.vm(await ctx.controller.release_hold(name, actor=actor(caller)))


@router.get("/audit", tags=["operators"])
async def audit(
    ctx: Ctx,
    caller: Admin,
    vm: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    pool: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[models.AuditEntry]:
    """Operators' actions (who terminated, drained, held what, when), newest first; of one VM
    or one pool if asked."""
    if vm is not None and pool is not None:
        raise exceptions.InvalidInput("give vm or pool, not both")
    kind, target = ("vm", vm) if vm is not None else ("pool", pool) if pool else (None, None)
    entries = await ctx.controller.audit(kind=kind, target=target, limit=limit)
    return [
        models.AuditEntry(
            at=e.at, actor=e.actor, action=e.action, kind=e.kind, target=e.target, detail=e.detail
        )
        for e in entries
    ]


@router.get("/reconcile", tags=["operators"])
async def reconcile_dry_run(ctx: Ctx, caller: Admin) -> list[models.ReconcileReport]:
    """Reconciliation's dry run: what comparing the store with every backend would terminate
    or mark now. Nothing is changed."""
    plans = await ctx.controller.reconcile(dry_run=True)
    return [
        models.ReconcileReport(
            pool=pool,
            sweep=[h.name for h in plan.sweep],
            foreign=[h.name for h in plan.foreign],
            lost=[v.name for v in plan.lost],
            gone=[v.name for v in plan.gone],
            orphans=[v.name for v in plan.orphans],
        )
        for pool, plan in sorted(plans.items())
    ]


@router.post("/config/reload", tags=["operators"])
async def reload_config(request: Request, caller: Admin) -> models.ReloadResult:
    """Re-read the server's configuration file and apply it without a restart: pools added,
    changed (for new VMs) or removed (drained, then gone once empty). An invalid file is refused
    (``config_error`` naming every problem) and the running configuration stays."""
    reload: Reloader | None = getattr(request.app.state, "reload", None)
    if reload is None:
        raise exceptions.ConfigError(
            "this server has no configuration file to reload (it was started without --config)"
        )
    return await reload(actor(caller))


# --- machines made elsewhere, forgotten, returned (issue 15) ---------------------------------


@router.post("/vms", status_code=201, tags=["operators"])
async def register_vm(body: models.RegisterRequest, ctx: Ctx, caller: Admin) -> models.VM:
    """Add a machine made elsewhere to a pool whose backend allows it. It is livechecked first
    (``machine_not_alive`` and nothing recorded if it fails), then serves as an *external* VM:
    never destroyed by corral, forgotten when it retires."""
    vm = await ctx.controller.register_vm(body.pool, body.name, body.address, actor=actor(caller))
    return convert.vm(vm)


@router.post("/vms/{name}/forget", tags=["operators"])
async def forget_vm(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    force: Annotated[
        bool, Query(description="Also a VM in use: its ticket fails (the machine is untouched).")
    ] = False,
) -> models.VM:
    """Stop tracking the VM without touching it: it goes ``terminating`` then ``forgotten``
    with no backend call, and its record stays so the leak sweep never terminates it. A VM in
    use is refused (``vm_in_use``) unless ``force``."""
    return convert.vm(await ctx.controller.forget_vm(name, force=force, actor=actor(caller)))


@router.post("/vms/{name}/return", tags=["operators"])
async def return_machine(name: Name, ctx: Ctx, caller: Admin) -> models.Machine:
    """Put a static pool's machine (named as a machine, or as the VM that reserved it) back in
    service after maintenance (``conflict`` when it is not in maintenance)."""
    return _machine(*await ctx.controller.return_machine(name, actor=actor(caller)))


@router.post("/vms/{name}/maintenance", tags=["operators"])
async def machine_maintenance(
    name: Name, body: models.MaintenanceRequest, ctx: Ctx, caller: Admin
) -> models.Machine:
    """Take a static pool's machine (named as a machine, or as the VM that reserved it) out of
    service with a reason: it is reserved no more until returned; a reserved one leaves service
    once its VM is released."""
    found = await ctx.controller.machine_maintenance(name, body.reason, actor=actor(caller))
    return _machine(*found)


def _machine(pool: str, status: MachineStatus) -> models.Machine:
    return models.Machine(
        name=status.name,
        pool=pool,
        address=status.address,
        state=str(status.state),
        vm=status.vm,
        reason=status.reason,
        since=status.since,
        attrs=dict(status.attrs),
    )


# --- per-pool info (Copr's write_vm_pool_info / read_vm_pool_info) ---------------------------

InfoKey = Annotated[str, PathParam(min_length=1, max_length=64)]


@router.get("/pools/{name}/info", tags=["pools"])
async def get_pool_info(name: Name, ctx: Ctx, caller: Caller) -> dict[str, JsonValue]:
    """Every key/value pair of the pool's info."""
    del caller
    return await ctx.controller.get_pool_info(name)


@router.get("/pools/{name}/info/{key}", tags=["pools"])
async def get_pool_info_key(
    name: Name, key: InfoKey, ctx: Ctx, caller: Caller
) -> models.PoolInfoEntry:
    """One key of the pool's info (``not_found`` when it is not set)."""
    del caller
    info = await ctx.controller.get_pool_info(name)
    if key not in info:
        raise exceptions.NotFound(f"pool {name} has no info key {key!r}")
    return models.PoolInfoEntry(pool=name, key=key, value=info[key])


@router.put("/pools/{name}/info/{key}", tags=["pools"])
async def set_pool_info_key(
    name: Name, key: InfoKey, body: models.InfoValue, ctx: Ctx, caller: Admin
) -> models.PoolInfoEntry:
    """Set one key of the pool's info to a JSON value (at most 16 KiB of JSON, 100 keys)."""
    if body.value is None:
        raise exceptions.InvalidInput("value must not be null: DELETE the key to remove it")
    await ctx.controller.set_pool_info(name, key, body.value, actor=actor(caller))
    return models.PoolInfoEntry(pool=name, key=key, value=body.value)


@router.delete("/pools/{name}/info/{key}", tags=["pools"])
async def delete_pool_info_key(
    name: Name, key: InfoKey, ctx: Ctx, caller: Admin
) -> models.PoolInfoEntry:
    """Remove one key of the pool's info (removing a key that is not set is harmless)."""
    await ctx.controller.set_pool_info(name, key, None, actor=actor(caller))
    return models.PoolInfoEntry(pool=name, key=key, value=None)
