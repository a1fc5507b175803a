"""Task ownership across hosts: one's own tasks at start, a dead host's tasks by one survivor.

Every task row names the host incarnation that runs it (``host_id#incarnation``, migration
0012). At start a host claims the unfinished tasks of its own earlier incarnations (and rows
from before the column existed) and recovers only those. After each heartbeat
(:class:`corral.cluster.service.Membership` observer) the live host that rendezvous hashing
prefers for a dead incarnation moves its unfinished tasks to itself with one conditional update
(:meth:`ClusterRepository.claim_tasks`: only while that incarnation is over), so each task is
recovered by exactly one survivor; a live host's tasks never match. Any live host takes over an
incarnation that stayed unclaimed for a lease time.

Task writes are fenced by the row's host (:func:`corral.store.sql.tasks.apply_ops`): once a
survivor claimed a task, the writes of the host that ran it (woken from a pause) are refused
with ``TaskTakenOver`` and its driver stops. A host that rejoins as a new incarnation records
its new tasks under the new key at once (:meth:`Takeover.update`), so they are never taken for
a dead host's.

A spawn or termination the dead host started may still be running on its machine (a script
outlives its controller, and the script backend cannot check a fencing token; the backends that
can are handed one, ``docs/cluster.md``): a claimed task is recovered (per SPEC §4, by the
engine) only once that operation's deadline has passed: the dead host's lease expiry plus the
pool's spawn or terminate timeout plus :data:`GRACE`.

This module must not decide leadership or touch VMs itself; the engine's recovery does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from corral import exceptions
from corral.cluster import membership
from corral.cluster.hosts import HostRecord
from corral.cluster.service import Membership
from corral.config import CorralConfig
from corral.controller import reconcile as reconciliation
from corral.controller import records, recovery
from corral.controller.ports import RecoveryHost
from corral.store.tasks import StoredTask, TaskRepository

log = logging.getLogger(__name__)

GRACE = 5.0
"""Seconds added to an operation's timeout before a survivor undoes it."""


class Recoverer(Protocol):
    """What takeover needs of the task engine."""

    async def recover_tasks(self, stored: Sequence[StoredTask]) -> None:
        """Recover these tasks as at a start (SPEC §4)."""


def parse_key(key: str) -> tuple[str, int] | None:
    """``host_id#incarnation`` -> its parts; ``None`` for a malformed or empty key."""
    host, sep, inc = key.rpartition("#")
    if not sep or not host or not inc.isdigit():
        return None
    return host, int(inc)


def deadline_of(stored: StoredTask, config: CorralConfig, expired_at: float) -> float:
    """When the operation of ``stored`` (started by a host whose lease ran out at
    ``expired_at``) is over for sure: its pool's timeout for that verb plus :data:`GRACE`."""
    pool_name: object = None
    try:
        jobs = json.loads(stored.row.jobs)
        if jobs and isinstance(jobs[0], dict):
            pool_name = jobs[0].get("args", {}).get("pool")
    except (ValueError, AttributeError):
        pool_name = None
    pools = list(config.pools.values())
    if isinstance(pool_name, str) and pool_name in config.pools:
        pools = [config.pools[pool_name]]
    if not pools:
        return expired_at + GRACE
    if stored.row.verb == "terminate":
        timeout = max(p.terminate_timeout for p in pools)
    else:
        timeout = max(max(p.spawn_timeout, p.terminate_timeout) for p in pools)
    return expired_at + timeout + GRACE


class Takeover:
    """Claims and recovers dead hosts' tasks (see the module docstring)."""

    def __init__(
        self,
        member: Membership,
        tasks: TaskRepository,
        engine: Callable[[], Recoverer],
        config: CorralConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._member = member
        self._tasks = tasks
        self._engine = engine
        self._config = config
        self._clock = clock
        self._seen_dead: dict[str, float] = {}
        self._jobs: set[asyncio.Task[None]] = set()
        self.taken: dict[str, list[str]] = {}
        """Dead incarnation -> the task ids this host took over from it."""

    async def claim_own(self) -> set[str]:
        """At start: claim this host's earlier incarnations' tasks; the ids it now owns."""
        member = self._member
        for key in await member.repo.task_hosts():
            parsed = parse_key(key)
            if parsed is not None and parsed[0] == member.host_id and key != member.key:
                ids = await member.repo.claim_tasks(key, member.key, parsed[0], parsed[1])
                if ids:
                    log.info("cluster: recovering %d task(s) of my incarnation %s", len(ids), key)
        return set(await member.repo.claim_legacy(member.key))

    async def update(self, hosts: Sequence[HostRecord], lost: bool) -> None:
        """After a heartbeat: claim what dead incarnations left, schedule its recovery."""
        member = self._member
        self._follow_incarnation()
        by_id = {h.host_id: h for h in hosts}
        live = [
            membership.Member(h.host_id, h.incarnation, h.config_hash, h.lease_expires_at)
            for h in hosts
            if h.alive
        ]
        others = [m for m in live if m.host_id != member.host_id]
        now = self._clock()
        for key in await member.repo.task_hosts():
            parsed = parse_key(key)
            if parsed is None or key == member.key:
                continue
            host_id, incarnation = parsed
            record = by_id.get(host_id)
            if record is not None and record.alive and record.incarnation == incarnation:
                self._seen_dead.pop(key, None)
                continue  # a live host's tasks are never touched
            first = self._seen_dead.setdefault(key, now)
            # this host's own earlier incarnation (it rejoined after a lost lease) may still
            # have drivers in memory: another host takes those tasks over when there is one
            mine = host_id == member.host_id and others
            preferred = membership.preferred_leader(f"takeover/{key}", others if mine else live)
            if preferred != member.host_id and now - first <= member.lease:
                continue
            ids = await member.repo.claim_tasks(key, member.key, host_id, incarnation)
            if not ids:
                continue
            self._seen_dead.pop(key, None)
            self.taken.setdefault(key, []).extend(ids)
            expired = record.lease_expires_at if record is not None else await member.repo.now()
            log.warning(
                "cluster: host %s takes over %d task(s) of dead %s", member.host_id, len(ids), key
            )
            job = asyncio.get_running_loop().create_task(self._recover(ids, expired))
            self._jobs.add(job)
            job.add_done_callback(self._jobs.discard)

    def _follow_incarnation(self) -> None:
        """New tasks are recorded as the current incarnation's (it changes at a rejoin); the
        old incarnation's rows are then a dead host's: their writes from this process are
        refused (``TaskTakenOver``) and a survivor recovers them."""
        tasks = self._tasks
        key = self._member.key
        if hasattr(tasks, "host") and tasks.host != key:
            log.warning("cluster: tasks are now recorded as %s's (was %s)", key, tasks.host)
            tasks.host = key

    async def _recover(self, ids: Sequence[str], expired_at: float) -> None:
        stored = [s for s in [await self._tasks.get(i) for i in ids] if s is not None]
        if not stored:
            return
        deadline = max(deadline_of(s, self._config, expired_at) for s in stored)
        wait = deadline - await self._member.repo.now()
        if wait > 0:
            log.info(
                "cluster: waiting %.1f s for the dead host's operations to time out before "
                "recovering %d task(s)",
                wait,
                len(stored),
            )
            await asyncio.sleep(wait)
        fresh = [s for s in [await self._tasks.get(s.row.id) for s in stored] if s is not None]
        try:
            await self._engine().recover_tasks(fresh)
        except exceptions.CorralError as exc:
            log.error("cluster: recovering taken-over tasks failed: %s", exc)

    async def close(self) -> None:
        """Cancel recoveries still waiting (the tasks stay claimed: recovered at next start)."""
        for job in list(self._jobs):
            job.cancel()
        await asyncio.gather(*self._jobs, return_exceptions=True)


class OrphanHost(RecoveryHost, Protocol):
    """What :class:`OrphanWatch` uses of the controller."""

    async def check_leadership(self, pool: str) -> None:
        """``StaleEpoch`` unless this host still leads ``pool`` (confirmed in the store)."""
        ...


class OrphanWatch:
    """The leader's watch for VMs a dead host left without a task.

    A host killed between writing a VM's row (``spawning``, or ``terminating`` after a ticket
    closed) and inserting the task that acts on it leaves a row no task will ever move: on a
    single host the start-up reconciliation terminates such orphans; in a cluster the host
    never restarts with that row's task list, so after each heartbeat the leader of each pool
    looks for rows in a state only a task leaves (the restart rules' orphans, judged with no
    inventory) that no unfinished task of *any* host tags (``vm:<name>``, from the store). A
    row must stay so, in the same state, for one lease (a live host inserts its task
    milliseconds after the row) before it is terminated, under a confirmed epoch.
    """

    def __init__(
        self, member: Membership, host: OrphanHost, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._member = member
        self._host = host
        self._clock = clock
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}
        self._last: float | None = None

    async def update(self, hosts: Sequence[HostRecord], lost: bool) -> None:
        """After a heartbeat (at most every half lease): find, confirm, terminate orphans."""
        now = self._clock()
        if lost:
            self._seen.clear()  # nothing seen under a lost lease counts
            return
        lease = self._member.lease
        if self._last is not None and now - self._last < lease / 2:
            return
        self._last = now
        ctl = self._host
        led = [pool for pool in ctl.config.pools if ctl.leads(pool)]
        if not led:
            self._seen.clear()
            return
        tags = await self._member.repo.busy_tags()
        busy = {t.removeprefix("vm:") for t in tags if t.startswith("vm:")} | ctl.busy_vms()
        seen: dict[tuple[str, str], tuple[str, float]] = {}
        for pool in led:
            vms = [records.vm(r) for r in await ctl.store.pools.list_vms(pool=pool)]
            plan = reconciliation.plan(pool, vms, None, busy, issued=0)
            confirmed = []
            for vm in plan.orphans:
                was = self._seen.get((pool, vm.name))
                first = was[1] if was is not None and was[0] == vm.state.value else now
                seen[(pool, vm.name)] = (vm.state.value, first)
                if now - first >= lease:
                    confirmed.append(vm)
            if not confirmed:
                continue
            try:
                await ctl.check_leadership(pool)
            except exceptions.StaleEpoch:
                continue
            log.warning(
                "cluster: pool %s: terminating %d VM(s) a dead host left without a task: %s",
                pool,
                len(confirmed),
                ", ".join(vm.name for vm in confirmed),
            )
            plan = reconciliation.ReconcilePlan(orphans=tuple(confirmed))
            try:  # fenced: a leader paused since its check terminates nothing
                await recovery.act(ctl, pool, plan, fence=ctl.lease_fence(pool))
            except exceptions.StaleEpoch:
                continue
            for vm in confirmed:
                seen.pop((pool, vm.name), None)
        self._seen = seen
