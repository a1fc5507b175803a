"""Read-only views of the controller's state: a pool's status and the human-readable summary.

These only read (the store, the configuration) and must not change anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.controller import records
from corral.pools import allocation, stats
from corral.pools.lifecycle import ALIVE_VM_STATES, values
from corral.pools.model import PoolStatus, TicketState

if TYPE_CHECKING:
    from corral.controller.controller import Controller

SAMPLES = 1000
"""Statistics are computed over this many recent samples."""


async def pool_status(ctl: Controller, name: str) -> PoolStatus:
    """One pool's limits, VM counts, queue, statistics and info (``PoolNotFound``)."""
    pool = ctl.config.pool(name)
    await ctl.flush_stats()
    counts = await ctl.store.pools.count_vms(name)
    waiting = await ctl.store.pools.list_tickets(states=[TicketState.WAITING.value])
    demand = allocation.route_demand([records.ticket(r) for r in waiting], list(ctl.all_limits()))
    held = await ctl.store.pools.held()
    counters = await ctl.store.pools.counters(name)
    samples = stats.Samples(
        spawn_times=await ctl.store.pools.samples(name, "spawn_time", limit=SAMPLES),
        wait_times=await ctl.store.pools.samples(name, "wait_time", limit=SAMPLES),
        spawn_attempts=counters.get("spawn_attempts", 0),
        spawn_failures=counters.get("spawn_failures", 0),
        terminate_failures=counters.get("terminate_failures", 0),
        livecheck_failures=counters.get("livecheck_failures", 0),
        wasted_spawns=counters.get("wasted_spawns", 0),
        spawn_outcomes=await ctl.store.pools.samples(
            name, "spawn_outcome", limit=stats.RECENT_SPAWNS
        ),
        last_spawn_error=ctl.preallocation.last_error.get(name),
    )
    summary = stats.summarize(samples)
    return PoolStatus(
        name=name,
        backend=pool.backend.type,
        tags=pool.tags,
        max=pool.max,
        max_starting=pool.max_starting,
        min_ready=pool.min_ready,
        vms=counts,
        waiting_tickets=demand.get(name, 0),
        assigned_tickets=sum(n for (_, p), n in held.items() if p == name),
        stats=summary,
        info=await ctl.get_pool_info(name),
        problem=stats.health(summary),
        description=pool.description,
        mode=ctl.pool_mode(name).value,
    )


async def summary(ctl: Controller, *, pool: str | None = None) -> str:
    """Every pool (or only ``pool``, ``PoolNotFound``) and its VMs in a human-readable form
    (Copr's ``VmManager.info``)."""
    lines = []
    statuses = await ctl.list_pools() if pool is None else [await ctl.get_pool(pool)]
    for status in statuses:
        counts = ", ".join(f"{k} {v}" for k, v in sorted(status.vms.items())) or "no VMs"
        s = status.stats
        lines.append(
            f"pool {status.name} ({status.backend}; max {status.max}, max_starting "
            f"{status.max_starting}, min_ready {status.min_ready}): {counts}; "
            f"{status.waiting_tickets} waiting, {status.assigned_tickets} assigned"
        )
        if s.spawn_p50 is not None:
            lines.append(f"  spawn p50 {s.spawn_p50:.3f} s, p95 {s.spawn_p95:.3f} s")
        if s.spawn_success_rate is not None:
            lines.append(f"  spawn success {s.spawn_success_rate:.0%} of {s.spawn_attempts}")
        if status.problem is not None:
            lines.append(f"  FAILING: {status.problem}")
        if s.wait_p50 is not None:
            lines.append(f"  allocation wait p50 {s.wait_p50:.3f} s, p95 {s.wait_p95:.3f} s")
        for vm in await ctl.find_vms(
            pool=status.name,
            states=values(ALIVE_VM_STATES),
        ):
            extra = f" ticket {vm.ticket}" if vm.ticket else ""
            lines.append(f"  {vm.name} {vm.state} {vm.address or '-'} uses {vm.uses}{extra}")
    return "\n".join(lines)
