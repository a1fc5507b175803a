"""Restarting (SPEC §6, §10): owning the store, killing leftovers, acting on reconciliation.

On start, before the task engine recovers anything, :func:`take_over` makes this process the
store's only owner (a SQLite store: ``corral.store.ownership``) and kills the commands an
earlier owner left running (``corral.backends.leftovers``): an interrupted spawn is undone only
once its ``new`` is dead. :func:`mark` makes this process's commands findable the same way. After
the engine recovered the unfinished tasks, :func:`reconcile` compares the store with every
backend and acts on the :mod:`reconcile` plan, whose every decision comes from the restart rules
(:mod:`corral.pools.restart`). This module must not decide; it claims, kills, submits tasks and
writes states.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from corral import exceptions
from corral.backends import leftovers
from corral.backends.base import Capability, Handle, VMSpec
from corral.backends.guard import GuardedBackend
from corral.config import CorralConfig
from corral.controller import reconcile as reconciliation
from corral.controller import records
from corral.controller.ports import RecoveryHost
from corral.pools import restart
from corral.pools.lifecycle import Effect, TicketEvent, TicketState, VMEvent, VMState, ticket_move
from corral.store import ownership
from corral.store import parse as parse_store_url
from corral.store.pools import LeaseFence
from corral.tasks import Step

log = logging.getLogger(__name__)

LOST = "lost by the backend"
"""The reason recorded on a VM the backend lost."""
FOREIGN_SHOWN = 5
"""Names of foreign machines quoted in the warning about them."""


async def take_over(config: CorralConfig) -> ownership.StoreClaim | None:
    """Own the configured store and kill what its earlier owners left running; ``None`` for a
    store that is not SQLite (PostgreSQL is shared by design; memory has no earlier owner).

    Raises ``StoreInUse`` when another process owns it: then nothing was touched.
    """
    url = parse_store_url(config.store)
    if url.kind != "sqlite" or not url.path:
        return None
    claim = ownership.claim(Path(url.path))
    try:
        await leftovers.kill(claim.marker)
    except BaseException:
        claim.release()
        raise
    return claim


def mark(backends: Mapping[str, GuardedBackend], claim: ownership.StoreClaim | None) -> None:
    """Make every command the backends start carry the store's marker (see :func:`take_over`)."""
    if claim is None:
        return
    for backend in backends.values():
        if isinstance(backend.backend, leftovers.MarksCommands):
            backend.backend.mark(claim.marker)


async def reconcile(
    ctl: RecoveryHost, *, dry_run: bool = False
) -> dict[str, reconciliation.ReconcilePlan]:
    """On start: compare the store with every backend's inventory and act on every difference.

    With ``dry_run`` (``corral reconcile --dry-run``), only the plans: nothing is terminated,
    marked or recommitted.
    """
    plans: dict[str, reconciliation.ReconcilePlan] = {}
    for name, backend in ctl.backends().items():
        if not ctl.leads(name):
            continue  # in a cluster, the pool's leader reconciles it (issue 11)
        listed = await _list(backend) if backend.has(Capability.LIST) else None
        # read the store after the backend: a VM's row (and its name) is written before the
        # backend is asked to create it, so everything listed is already known to these reads
        issued = await ctl.store.pools.vms_issued(name)
        vms = [records.vm(r) for r in await ctl.store.pools.list_vms(pool=name)]
        template = ctl.config.pool(name).template.as_mapping()
        plans[name] = reconciliation.plan(
            name, vms, listed, ctl.busy_vms(), issued=issued, adopt=ctl.adopt
        )
        if dry_run:
            continue
        for vm in vms:
            if vm.alive:  # the host's committed capacity survives our restart
                backend.recommit(VMSpec(vm.name, name, vm.id_in_pool, template))
        _report(name, plans[name].foreign, issued)
        try:
            await act(ctl, name, plans[name], fence=ctl.lease_fence(name))
        except exceptions.StaleEpoch as exc:
            # the lease lapsed or moved since ``leads``: the pool is another host's now (its
            # orphan watch, leak sweep and livechecks cover what this plan did not finish);
            # the start goes on with the other pools
            log.warning("pool %s: start-up reconciliation stopped: %s", name, exc.message)
    return plans


async def sweep(ctl: RecoveryHost) -> int:
    """While running: terminate machines the backends have and the store does not know alive.

    Only the leak sweep: a VM the store has and a backend does not list is left to the
    livechecks, since a backend's listing may lag behind its own creations.
    """
    swept = 0
    for name, backend in ctl.backends().items():
        if not backend.has(Capability.LIST) or not ctl.leads(name):
            continue  # (the pool's leader sweeps it)
        listed = await _list(backend)
        if listed is None:
            continue
        issued = await ctl.store.pools.vms_issued(name)
        vms = [records.vm(r) for r in await ctl.store.pools.list_vms(pool=name)]
        plan = reconciliation.plan(
            name, vms, listed, ctl.busy_vms(), issued=issued, adopt=ctl.adopt
        )
        if plan.foreign:  # reported at start; the sweep leaves them be
            log.debug("pool %s: %d foreign machines left alone", name, len(plan.foreign))
        await act(ctl, name, reconciliation.ReconcilePlan(sweep=plan.sweep))
        swept += len(plan.sweep)
    return swept


def _report(pool: str, foreign: tuple[Handle, ...], issued: int) -> None:
    if not foreign:
        return
    names = ", ".join(h.name for h in foreign[:FOREIGN_SHOWN])
    more = f" and {len(foreign) - FOREIGN_SHOWN} more" if len(foreign) > FOREIGN_SHOWN else ""
    history = (
        "the store has no history of this pool"
        if issued == 0
        else f"the store issued {restart.vm_name(pool, 1)} to {restart.vm_name(pool, issued)}"
    )
    log.warning(
        "pool %s: the backend has %d machines this store never created (%s%s; %s): leaving them "
        "alone. If this store should own them (it replaced the store they were made with), "
        "restart with --adopt to terminate them as leaks.",
        pool,
        len(foreign),
        names,
        more,
        history,
    )


async def _list(backend: GuardedBackend) -> list[Handle] | None:
    try:
        return await backend.list()
    except exceptions.BackendError as exc:
        log.warning("pool %s: cannot list the backend's VMs: %s", backend.pool, exc)
        return None


async def act(
    ctl: RecoveryHost,
    pool: str,
    plan: reconciliation.ReconcilePlan,
    *,
    fence: LeaseFence | None = None,
) -> None:
    """Sweep leaked machines, mark lost VMs, terminate orphans (one pool). ``fence``: the
    pool leader's lease, carried by every store write (refused with ``StaleEpoch`` once it
    moved); the sweep writes no row (its tasks hold the machine's lock)."""
    for handle in plan.sweep:
        log.warning("pool %s: terminating unknown machine %s", pool, handle.name)
        await ctl.tasks.submit(
            "sweep",
            jobs=[Step("vm.sweep", {"pool": pool, "handle": handle.to_json()})],
            locks={f"vm/{handle.name}": "exclusive"},
            tag=f"sweep:{handle.name}",
            priority="high",
            recovery="resume",
        )
    for vm in plan.lost:
        log.warning("pool %s: the backend lost VM %s (%s)", pool, vm.name, vm.state)
        for held_by in vm.tickets or (() if vm.ticket is None else (vm.ticket,)):
            await _fail_ticket(ctl, held_by, vm.name, fence)
        await ctl.apply_vm(
            vm.name,
            VMEvent.LOST,
            current=vm.state,
            fence=fence,
            ticket=None,
            owner=None,
            reason=LOST,
        )
    for vm in plan.gone:
        log.info("pool %s: VM %s was terminated while corral was down", pool, vm.name)
        await ctl.apply_vm(vm.name, VMEvent.LOST_WHILE_TERMINATING, current=vm.state, fence=fence)
    for vm in plan.orphans:
        # the termination it leads to is submitted by the move's effects
        await ctl.apply_vm(vm.name, VMEvent.ORPHANED, current=vm.state, fence=fence)


async def _fail_ticket(
    ctl: RecoveryHost, ticket: str, vm: str, fence: LeaseFence | None = None
) -> None:
    """End the ticket of a lost VM as failed; the VM keeps its state for its own move."""
    move = ticket_move(TicketEvent.FAILED, TicketState.ASSIGNED)
    closed = await ctl.store.pools.close_ticket(
        ticket,
        expect=move.expect,
        state=TicketState.FAILED.value,
        vm_state=VMState.IN_USE.value,
        now=ctl.clock(),
        reason="its VM was lost by the backend",
        fence=fence,
    )
    if closed is None:
        return
    for other in closed.others:
        # the other machines of a multi-machine ticket: freed with it, not reused
        await ctl.apply_vm(other.name, VMEvent.FREED_TO_TERMINATE, current=other.state, fence=fence)
    if Effect.WAKE_WAITERS in move.effects:
        # with its pool, as every ticket end: 'corral events --pool P' filters by it
        pool = closed.ticket.pool
        data = {"vm": vm} if pool is None else {"vm": vm, "pool": pool}
        ctl.ticket_changed(ticket, TicketState.FAILED.value, data)
    if Effect.KICK_ASSIGN in move.effects:
        ctl.kick_assign()
