"""An assignment round reads the waiting queue only when a VM could serve it (issue 8 item 3).

With 1,000 tickets waiting on a full pool, every created ticket kicked a round that read (and
decoded) the whole queue although no VM was ready: O(waiting) per ticket. A round that found no
VM for its waiters makes the next rounds count ready VMs first; a warm pool pays no extra read.
"""

from __future__ import annotations

import asyncio
from typing import Any

from corral.pools.model import TicketState

from .conftest import controller


async def _idle(ctl: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not (ctl.assignment.idle and ctl.preallocation.idle):
        assert asyncio.get_running_loop().time() < deadline, "the runners never went idle"
        await asyncio.sleep(0.01)


async def test_a_starved_queue_is_not_read_on_every_kick_and_a_warm_pool_counts_nothing() -> None:
    """Catches a round that reads every waiting ticket while no VM is ready (the 1,000-waiter
    cost), one that never reads them again once a VM is ready (the waiter would starve), and
    an extra count read on a warm pool."""
    async with controller({"min_ready": 1, "max": 1}) as ctl:
        held = await ctl.wait_ticket((await ctl.create_ticket(owner="o", pool="p")).id, timeout=30)
        assert held.state is TicketState.ASSIGNED
        pools = ctl.store.pools
        calls: list[str] = []
        inputs, counts = pools.allocation_inputs, pools.count_vms

        async def counted_inputs(*args: Any, **kwargs: Any) -> Any:
            calls.append("queue")
            return await inputs(*args, **kwargs)

        async def counted_counts(pool: str) -> Any:
            calls.append("count")
            return await counts(pool)

        pools.allocation_inputs = counted_inputs
        pools.count_vms = counted_counts
        waiting = []
        for _ in range(20):  # one round per ticket, as when requests come one by one
            waiting.append(await ctl.create_ticket(owner="o", pool="p"))
            await _idle(ctl)
        assert calls.count("queue") <= 1, f"the queue was read on every kick: {calls}"
        await ctl.close_ticket(held.id)  # a fresh VM is spawned: the oldest waiter gets it
        got = await ctl.wait_ticket(waiting[0].id, timeout=30)
        assert got.state is TicketState.ASSIGNED
        for ticket in waiting:
            await ctl.close_ticket(ticket.id)
        await _idle(ctl)
    async with controller({"min_ready": 3, "max": 5}) as ctl:
        deadline = asyncio.get_running_loop().time() + 30
        while (await ctl.store.pools.count_vms("p")).get("ready", 0) < 3:
            assert asyncio.get_running_loop().time() < deadline, "the pool never got warm"
            await asyncio.sleep(0.01)
        await _idle(ctl)
        pools = ctl.store.pools
        calls = []
        inputs = pools.allocation_inputs

        async def counted_inputs2(*args: Any, **kwargs: Any) -> Any:
            calls.append("queue")
            return await inputs(*args, **kwargs)

        assign_counts = pools.count_vms

        async def counted_counts2(pool: str) -> Any:
            calls.append("count")
            return await assign_counts(pool)

        pools.allocation_inputs = counted_inputs2
        pools.count_vms = counted_counts2
        ticket = await ctl.create_ticket(owner="o", pool="p")
        assert (await ctl.wait_ticket(ticket.id, timeout=30)).state is TicketState.ASSIGNED
        assert calls[0] == "queue", f"a warm pool's round counted first: {calls}"
