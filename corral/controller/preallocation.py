"""Preallocation: keep each pool at ``min_ready`` (plus its queue), event-driven, with backoff.

Kicked whenever a VM changes state or a ticket waits; :func:`corral.pools.allocation.plan_supply`
decides how many (and which idle used VMs make room when the pool is full); this module records
the VMs and submits their spawn tasks. Spawn failures hold
the pool's next spawns back with exponential backoff. This module must not call backends.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Mapping, Sequence

from corral import exceptions
from corral.controller import ports, records
from corral.controller.events import Event
from corral.controller.operators import PoolMode
from corral.controller.runner import Coalescer
from corral.pools import allocation, demand
from corral.pools.lifecycle import VM_INITIAL, VMEvent
from corral.pools.model import Ticket, VMState
from corral.store.pools import TicketRow

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.05
BACKOFF_MAX = 30.0


def _blocked(limits: allocation.PoolLimits, counts: Mapping[str, int]) -> bool:
    return allocation.supply_blocked(limits, {VMState(k): v for k, v in counts.items()})


class Preallocator:
    """Tops pools up; one coalesced runner for all pools."""

    def __init__(self, controller: ports.PreallocatorHost) -> None:
        self._ctl = controller
        self._hold: dict[str, tuple[int, float]] = {}
        self.last_error: dict[str, str] = {}
        self._rate: dict[str, demand.Rate] = {}
        self._spawn_time: dict[str, demand.Average] = {}
        """Why each pool's latest failed spawn failed (as seen by this process)."""
        self._runner: Coalescer[str] = Coalescer("top-up", self._top_up_all)

    @property
    def idle(self) -> bool:
        """True when no top-up is pending or running."""
        return self._runner.idle

    def kick(self, pool: str) -> None:
        """Re-plan ``pool`` soon (coalesced with other kicks)."""
        ctl = self._ctl
        if ctl.stopped or not ctl.started or not ctl.maintains or not ctl.leads(pool):
            return  # in a cluster, only the pool's leader preallocates (issue 11)
        self._runner.kick(pool)

    async def close(self) -> None:
        """Stop planning."""
        await self._runner.close()

    async def finished(
        self, pool: str, ok: bool, seconds: float | None, reason: str | None = None
    ) -> None:
        """Record a spawn's outcome; failures hold the pool's next spawns back (backoff)."""
        ctl = self._ctl
        ctl.record(pool, "spawn_outcome", 1.0 if ok else 0.0)
        if ok:
            self._hold.pop(pool, None)
            if seconds is not None:
                ctl.record(pool, "spawn_time", seconds)
                self._spawn_time[pool] = self._spawn_time.get(pool, demand.Average()).observe(
                    seconds
                )
            return
        if reason is not None:
            self.last_error[pool] = reason
        log.warning("pool %s: a spawn failed: %s", pool, reason or "no reason given")
        ctl.count(pool, "spawn_failures")
        failures = self._hold.get(pool, (0, 0.0))[0] + 1
        delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** min(failures - 1, 20))
        self._hold[pool] = (failures, asyncio.get_running_loop().time() + delay)
        ctl.later(delay, functools.partial(self.kick, pool))

    def consumed(self, pool: str) -> None:
        """A ticket took a VM of ``pool``: the demand estimate goes up, and the pool is
        re-planned."""
        self._rate.setdefault(pool, demand.Rate()).observe(self._ctl.clock())
        self.kick(pool)

    def expected(self, pool: str) -> int:
        """Spawns the measured demand needs in flight now (Little's law), within ``max``."""
        rate = self._rate.get(pool)
        if rate is None:
            return 0
        spawn_time = self._spawn_time.get(pool, demand.Average()).value
        if spawn_time is None:
            return 0
        wanted = demand.in_flight(rate.rate(self._ctl.clock(), floor=spawn_time), spawn_time)
        return min(wanted, self._ctl.limits(pool).max)

    async def _top_up_all(self, pools: list[str]) -> None:
        for name in sorted(pools):
            try:
                await self._top_up(name)
            except exceptions.CorralError as exc:
                log.warning("pool %s: top-up failed: %s", name, exc)
                self._ctl.later(self._ctl.tick, functools.partial(self.kick, name))

    def demand(
        self, rows: Sequence[TicketRow], held: Mapping[tuple[str, str], int]
    ) -> dict[str, list[Ticket]]:
        """The waiting tickets each pool should spawn for (owners at their limit left out)."""
        ctl = self._ctl
        limits = ctl.all_limits()
        eligible = []
        for row in rows:
            t = records.ticket(row)
            for name in allocation.pools_for(t, limits):
                limit = ctl.limits(name).max_per_owner
                if limit is None or held.get((t.owner, name), 0) < limit:
                    eligible.append(t)
                    break
        return allocation.route_tickets(eligible, limits)

    async def _top_up(self, pool: str) -> None:
        ctl = self._ctl
        hold = self._hold.get(pool)
        if hold is not None and hold[1] > asyncio.get_running_loop().time():
            return
        if ctl.pool_mode(pool) is not PoolMode.ACTIVE:
            return  # paused or draining: no new VMs
        if not ctl.leads(pool):
            return  # another host leads the pool now (issue 11)
        await ctl.check_leadership(pool)  # a stale leader (woken from a pause) spawns nothing
        limits = ctl.limits(pool)
        # A saturated pool (every spawn slot busy, or full with nothing to evict) plans nothing
        # whatever its queue: the counts are read first, in the same unit, and nothing more
        # then, sparing reading and converting every waiting ticket, which with 1,000 waiters
        # was most of the server's time (issue 8 item 3). Counts and queue come from one
        # transaction: a consistent picture, never one VM too many.
        snap = await ctl.store.pools.pool_snapshot(pool, unless=functools.partial(_blocked, limits))
        if snap.blocked:
            return
        tickets = self.demand(snap.waiting, snap.held).get(pool, []) if snap.waiting else []
        plan = allocation.plan_supply(
            limits,
            {VMState(k): v for k, v in snap.counts.items()},
            [t.sandbox for t in tickets for _ in range(t.count)],  # N machines for count N
            [allocation.IdleVM(v.name, v.sandbox, v.last_used_at) for v in snap.idle_used],
            self.expected(pool),
        )
        for name in plan.evict:
            # fenced: a leader paused since its check evicts nothing once another host leads
            row = await ctl.apply_vm(
                name,
                VMEvent.RETIRED,
                fence=ctl.lease_fence(pool),
                reason="evicted: a waiting ticket needs a fresh VM",
            )
            if row is not None:
                log.info("pool %s: terminating idle %s to make room for a fresh VM", pool, name)
        if plan.spawn:
            # concurrently: the SQL store group-commits the rows and the task records together
            await asyncio.gather(*(self._start_spawn(pool) for _ in range(plan.spawn)))

    async def _start_spawn(self, pool: str) -> None:
        ctl = self._ctl
        # fenced: a leader paused since its check writes nothing once another host took over
        fence = ctl.lease_fence(pool)
        row = await ctl.store.pools.create_vm(
            pool, state=VM_INITIAL.value, now=ctl.clock(), fence=fence
        )
        ctl.count(pool, "spawn_attempts")
        await ctl.submit_spawn(row)
        ctl.events.publish(Event("vm", row.name, row.state, ctl.clock(), {"pool": pool}))
