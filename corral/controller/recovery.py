"""Acting on reconciliation (SPEC §6): what the controller does with a :mod:`reconcile` plan.

Run once on start, after the task engine recovered unfinished tasks. This module must not decide
(that is :func:`corral.controller.reconcile.plan`); it submits tasks and writes states.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from corral import exceptions
from corral.backends.base import Capability, Handle, VMSpec
from corral.backends.guard import GuardedBackend
from corral.controller import reconcile as reconciliation
from corral.controller import records
from corral.pools.model import VMState
from corral.tasks import Step

if TYPE_CHECKING:
    from corral.controller.controller import Controller

log = logging.getLogger(__name__)


async def reconcile(ctl: Controller) -> dict[str, reconciliation.ReconcilePlan]:
    """On start: compare the store with every backend's inventory and act on every difference."""
    plans: dict[str, reconciliation.ReconcilePlan] = {}
    for name, backend in ctl.backends().items():
        listed = await _list(backend) if backend.has(Capability.LIST) else None
        # read the store after the backend: a VM's row is written before the backend is asked
        # to create it, so everything listed is already known to this read
        vms = [records.vm(r) for r in await ctl.store.pools.list_vms(pool=name)]
        template = ctl.config.pool(name).template.as_mapping()
        for vm in vms:
            if vm.alive:  # the host's committed capacity survives our restart
                backend.recommit(VMSpec(vm.name, name, vm.id_in_pool, template))
        busy = ctl.busy_vms()
        if listed is None:
            plans[name] = reconciliation.ReconcilePlan(orphans=reconciliation.orphans(vms, busy))
        else:
            plans[name] = reconciliation.plan(vms, listed, busy)
        await act(ctl, name, plans[name])
    return plans


async def sweep(ctl: Controller) -> int:
    """While running: terminate machines the backends have and the store does not know alive.

    Only the leak sweep: a VM the store has and a backend does not list is left to the
    livechecks, since a backend's listing may lag behind its own creations.
    """
    swept = 0
    for name, backend in ctl.backends().items():
        if not backend.has(Capability.LIST):
            continue
        listed = await _list(backend)
        if listed is None:
            continue
        vms = [records.vm(r) for r in await ctl.store.pools.list_vms(pool=name)]
        plan = reconciliation.plan(vms, listed, ctl.busy_vms())
        await act(ctl, name, reconciliation.ReconcilePlan(sweep=plan.sweep))
        swept += len(plan.sweep)
    return swept


async def _list(backend: GuardedBackend) -> list[Handle] | None:
    try:
        return await backend.list()
    except exceptions.BackendError as exc:
        log.warning("pool %s: cannot list the backend's VMs: %s", backend.pool, exc)
        return None


async def act(ctl: Controller, pool: str, plan: reconciliation.ReconcilePlan) -> None:
    """Sweep leaked machines, mark lost VMs, terminate orphans (one pool)."""
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
    now = ctl.clock()
    for vm in plan.lost:
        log.warning("pool %s: the backend lost VM %s (%s)", pool, vm.name, vm.state)
        if vm.state is VMState.IN_USE and vm.ticket is not None:
            await ctl.store.pools.close_ticket(
                vm.ticket,
                expect=["assigned"],
                state="failed",
                vm_state="in_use",
                now=now,
                reason="its VM was lost by the backend",
            )
            ctl.ticket_changed(vm.ticket, "failed", {"vm": vm.name})
        final = "terminated" if vm.state is VMState.TERMINATING else "failed"
        row = await ctl.store.pools.update_vm(
            vm.name,
            expect=None,
            changes={
                "state": final,
                "state_since": now,
                "ticket": None,
                "owner": None,
                "reason": "lost by the backend",
            },
        )
        if row is not None:
            ctl.vm_changed(row)
    for vm in plan.orphans:
        row = await ctl.store.pools.update_vm(
            vm.name,
            expect=[vm.state.value],
            changes={"state": "terminating", "state_since": now}
            if vm.state is not VMState.TERMINATING
            else {},
        )
        if row is not None:
            await ctl.submit_terminate(vm.name)
