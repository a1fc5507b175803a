"""The controller's timed duties: livechecks, lease expiry, age/uses/idle limits, re-driving.

Everything here runs on a timer (``tick`` seconds, or sooner when woken) and none of it is on the
path from "VM ready" to "ticket assigned", which is event-driven. Decisions come from
:mod:`corral.pools.allocation`; state changes are conditional writes, and backend actions are tasks
submitted through the controller. This module must not call a backend except ``livecheck`` through
the guard.

In a cluster (issue 11) every write a round makes for a pool carries the pool leader's lease
fence (:meth:`corral.controller.Controller.lease_fence`), checked by the store in the write's own
statement: a leader paused after its round's epoch check makes no late write. A refused write
(``StaleEpoch``, logged by the store) ends this host's work on that pool for the round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from corral import exceptions
from corral.backends.base import Capability
from corral.controller import ports, records, retention
from corral.controller.operators import PoolMode
from corral.controller.steps import handle_of
from corral.pools import allocation
from corral.pools.lifecycle import (
    ALIVE_VM_STATES,
    CHECKED_VM_STATES,
    OPEN_TICKET_STATES,
    VMEvent,
    values,
)
from corral.pools.model import VM, TicketState, VMState
from corral.store.pools import LeaseFence

log = logging.getLogger(__name__)


class Maintenance:
    """Runs :meth:`run_once` every ``tick`` seconds (or when woken) until stopped."""

    def __init__(self, controller: ports.MaintenanceHost) -> None:
        self._ctl = controller
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._last_check: dict[str, float] = {}
        self._checking: set[str] = set()
        self._checks: set[asyncio.Task[None]] = set()
        self._next_scan: dict[str, float] = {}
        self._last_sweep: float | None = None
        self._last_purge: float | None = None

    def start(self) -> None:
        """Start the loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def wake(self) -> None:
        """Run the duties now rather than at the next tick."""
        self._wake.set()

    async def stop(self) -> None:
        """Stop the loop and any livecheck in flight."""
        jobs = [*self._checks, *([self._task] if self._task is not None else [])]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)
        self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except exceptions.CorralError as exc:
                log.warning("maintenance: %s", exc)
            except Exception:
                # never let one bad round end the loop: the daemon must keep maintaining
                log.exception("maintenance round failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ctl.tick):
                    await self._wake.wait()

    async def run_once(self, *, wait: bool = False) -> None:
        """Expire lapsed tickets, retire old VMs, start due livechecks, re-drive stuck VMs.

        With ``wait`` the livechecks are awaited (tests); otherwise they run in the background.
        """
        ctl = self._ctl
        now = ctl.clock()
        await ctl.flush_stats()
        await self.expire_tickets(now)
        await ctl.operators.load()  # another process sharing the store may have changed them
        for name in sorted(ctl.config.pools):
            if not await self._leading(name):
                continue  # another host leads this pool's maintenance (issue 11)
            try:
                fence = ctl.lease_fence(name)
                await ctl.operators.expire_holds(name, now, fence=fence)
                if ctl.pool_mode(name) is PoolMode.DRAINING:
                    await ctl.operators.drain_idle(name, fence=fence)
                await self.retire(name, now)
                await self.redrive(name, now)
            except exceptions.StaleEpoch as exc:
                log.warning("maintenance: pool %s: no longer led here, stopped: %s", name, exc)
                continue
            job = asyncio.get_running_loop().create_task(self.livechecks(name, now))
            self._checks.add(job)
            job.add_done_callback(self._checks.discard)
            if wait:
                await job
        await self.sweep(now)
        await self.purge(now)
        # Another process sharing the database may have taken or freed VMs: top up and assign.
        for name in ctl.config.pools:
            ctl.kick_spawn(name)
        ctl.kick_assign()

    async def _leading(self, pool: str) -> bool:
        """Whether this host leads ``pool`` now, its epoch confirmed by the store (a stale one
        is refused and logged: a host woken from a pause does not maintain what it led)."""
        if not self._ctl.leads(pool):
            return False
        try:
            await self._ctl.check_leadership(pool)
        except exceptions.StaleEpoch:
            return False
        return True

    async def sweep(self, now: float) -> None:
        """Sweep leaked machines when the shortest ``sweep_interval`` elapsed."""
        intervals = [p.sweep_interval for p in self._ctl.config.pools.values() if p.sweep_interval]
        if not intervals:
            return
        if self._last_sweep is None:
            self._last_sweep = now  # the start-up reconciliation just ran
            return
        if now - self._last_sweep >= min(intervals):
            self._last_sweep = now
            await self._ctl.sweep()

    async def purge(self, now: float) -> tuple[int, int]:
        """Forget terminated VMs, ended tickets, done tasks and operator actions older than the
        configured ``history``, in bounded batches (:mod:`corral.controller.retention`), at most
        once a minute (more often only for a history shorter than ten minutes); how many VMs and
        tickets were forgotten."""
        history = self._ctl.config.history
        if history is None:
            return (0, 0)
        if self._last_purge is not None and now - self._last_purge < min(history / 10, 60.0):
            return (0, 0)
        self._last_purge = now
        pruned = await retention.prune(self._ctl, now - history)
        return pruned.vms, pruned.tickets

    async def expire_tickets(self, now: float) -> int:
        """Expire every open ticket whose lease lapsed; their VMs are terminated."""
        rows = await self._ctl.store.pools.list_tickets(
            states=values(OPEN_TICKET_STATES), expired_before=now
        )
        done = 0
        stale: set[str] = set()
        for row in rows:
            ticket = records.ticket(row)
            pool = ticket.pool
            if pool is not None and (pool in stale or not self._ctl.leads(pool)):
                continue  # the pool's leader expires it
            try:
                # fenced: a leader paused since it read the ticket expires nothing once
                # another host leads the pool
                fence = None if pool is None else self._ctl.lease_fence(pool)
                if await self._ctl.end_ticket(
                    ticket, TicketState.EXPIRED, "lease expired", reuse=False, fence=fence
                ):
                    done += 1
            except exceptions.StaleEpoch as exc:
                log.warning("maintenance: pool %s: no longer led here, stopped: %s", pool, exc)
                stale.add(str(pool))
        return done

    async def retire(self, pool: str, now: float) -> int:
        """Terminate idle VMs past ``max_age``/``max_uses``/``idle_timeout`` or beyond ``max``."""
        ctl = self._ctl
        limits = ctl.limits(pool)
        counts = await ctl.store.pools.count_vms(pool)
        alive = sum(n for state, n in counts.items() if state in ALIVE_VM_STATES)
        ages = (limits.max_age, limits.max_uses, limits.idle_timeout)
        keep_fresh = limits.min_ready + ctl.expected_in_flight(pool)
        ready = counts.get(VMState.READY, 0)
        if all(a is None for a in ages) and alive <= limits.max and ready <= keep_fresh:
            return 0  # nothing can be due: skip reading every VM of a large pool
        rows = await ctl.store.pools.list_vms(pool=pool, states=values([VMState.READY]))
        vms = {r.name: records.vm(r) for r in rows}
        plan = allocation.plan_terminations(
            limits, list(vms.values()), now, alive=alive, keep_fresh=keep_fresh
        )
        done = 0
        fence = ctl.lease_fence(pool)  # a leader paused since its check retires nothing
        for item in plan:
            row = await ctl.apply_vm(
                item.vm, VMEvent.RETIRED, fence=fence, state_since=now, reason=item.reason
            )
            if row is not None:
                done += 1
                if vms[item.vm].fresh:
                    ctl.count(pool, "wasted_spawns")
        return done

    async def redrive(self, pool: str, now: float) -> None:
        """Resubmit work for VMs left releasing or terminating with no task of ours on them."""
        ctl = self._ctl
        rows = await ctl.store.pools.list_vms(
            pool=pool, states=values([VMState.RELEASING, VMState.TERMINATING])
        )
        for row in rows:
            if ctl.busy(row.name) or now - row.state_since < ctl.tick:
                continue
            if row.state == VMState.TERMINATING:
                await ctl.submit_terminate(row.name)
            else:
                await ctl.submit_release(row.name)

    async def livechecks(self, pool: str, now: float) -> None:
        """Check every ready or in-use VM whose period elapsed."""
        ctl = self._ctl
        backend = ctl.backend(pool)
        if not backend.has(Capability.LIVECHECK):
            return
        period = ctl.pool_config(pool).livecheck.period
        # scan a pool at most four times per period: a VM is checked at most a quarter late,
        # and a large pool is not read on every tick
        if now < self._next_scan.get(pool, float("-inf")):
            return
        self._next_scan[pool] = now + period / 4
        rows = await ctl.store.pools.list_vms(pool=pool, states=values(CHECKED_VM_STATES))
        due = []
        for row in rows:
            last = self._last_check.get(row.name, row.ready_at or row.state_since)
            if now - last >= period and row.name not in self._checking:
                due.append(records.vm(row))
        try:
            fence = ctl.lease_fence(pool)
        except exceptions.StaleEpoch:
            return  # no longer led here: the new leader checks them
        found = await asyncio.gather(
            *(self._check(vm, now, fence) for vm in due), return_exceptions=True
        )
        for outcome in found:
            if isinstance(outcome, exceptions.StaleEpoch):
                log.warning("maintenance: pool %s: a livecheck's write refused: %s", pool, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

    async def _check(self, vm: VM, now: float, fence: LeaseFence | None = None) -> None:
        ctl = self._ctl
        self._checking.add(vm.name)
        self._last_check[vm.name] = now
        try:
            row = await ctl.store.pools.get_vm(vm.name)
            if row is None or row.state not in CHECKED_VM_STATES:
                return
            try:
                ok = await ctl.backend(vm.pool).livecheck(handle_of(row))
            except exceptions.CapabilityMissing:
                return
            except exceptions.BackendError as exc:
                log.info("livecheck of %s failed: %s", vm.name, exc)
                ok = False
            if ok:
                if row.livecheck_failures:
                    await ctl.apply_vm(
                        vm.name,
                        VMEvent.LIVECHECK_PASSED,
                        current=row.state,
                        fence=fence,
                        livecheck_failures=0,
                    )
                return
            await self._failed(row.name, row.state, row.livecheck_failures + 1, now, fence)
        finally:
            self._checking.discard(vm.name)

    async def _failed(
        self, name: str, state: str, failures: int, now: float, fence: LeaseFence | None = None
    ) -> None:
        ctl = self._ctl
        row = await ctl.apply_vm(
            name,
            VMEvent.LIVECHECK_FAILED,
            current=state,
            fence=fence,
            livecheck_failures=failures,
            last_livecheck_at=now,
        )
        if row is None:
            return
        ctl.count(row.pool, "livecheck_failures")
        if failures < ctl.pool_config(row.pool).livecheck.attempts:
            return
        reason = f"failed {failures} livechecks in a row"
        if row.state == VMState.IN_USE and row.ticket is not None:
            for held_by in row.tickets or (row.ticket,):  # a shared VM fails all its tickets
                ticket = await ctl.get_ticket(held_by)
                await ctl.end_ticket(ticket, TicketState.FAILED, reason, reuse=False, fence=fence)
            return
        await ctl.apply_vm(name, VMEvent.RETIRED, fence=fence, state_since=now, reason=reason)

    def forget(self, name: str) -> None:
        """Drop the bookkeeping of a VM that is gone."""
        self._last_check.pop(name, None)
