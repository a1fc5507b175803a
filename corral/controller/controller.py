"""The controller (SPEC §6): keeps pools at ``min_ready``, assigns tickets, checks, expires, reuses.

:class:`Controller` is the facade the API, CLI and client use (docs/architecture.md). Decisions
come from the pure :mod:`corral.pools.allocation`; every backend action is a task of the engine
(:mod:`corral.controller.steps`) holding the VM's exclusive lock; every assignment is one atomic
conditional write in the store. Assignment and top-up are event-driven: any change that can make a
ticket servable (a ticket created, a VM ready, a ticket closed) marks a "dirty" flag and the one
runner re-reads and decides again, so no wake-up is lost and nothing polls in between. A
maintenance loop runs livechecks, lease expiry and age limits on a timer.

This module must not block the event loop, call a backend outside a ``GuardedBackend``, or make a
decision that :mod:`corral.pools.allocation` can make purely.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Backend, Fence
from corral.backends.guard import GuardedBackend
from corral.backends.static_inventory import MachineStatus
from corral.config import CorralConfig
from corral.controller import leadership, poolinfo, records, recovery, takeover, views, wiring
from corral.controller import reconcile as reconciliation
from corral.controller.assignment import Assigner
from corral.controller.crosshost import CrossHost
from corral.controller.events import Event, EventBus
from corral.controller.maintenance import Maintenance
from corral.controller.operators import Operators, PoolMode
from corral.controller.preallocation import Preallocator
from corral.controller.registry import Registry
from corral.controller.reload import Reloader, ReloadReport
from corral.controller.steps import REGISTRY, TERMINATE_REQUESTED
from corral.controller.tickets import Tickets
from corral.controller.vmtasks import VMTasks
from corral.locks import LockManager
from corral.pools.allocation import PoolLimits
from corral.pools.config import PoolConfig
from corral.pools.lifecycle import (
    ALIVE_VM_STATES,
    Effect,
    VMEvent,
    effects_into,
    values,
    vm_move,
)
from corral.pools.model import VM, PoolStatus, Request, Ticket, TicketState, VMState
from corral.store import Store, open_store, ownership
from corral.store import parse as parse_store_url
from corral.store.pools import AuditEntry, LeaseFence, LockFence, TicketRow, VMRow, WriteFence
from corral.store.url import prepare as prepare_store_url
from corral.tasks import TaskEngine, TaskEvent, TaskState
from corral.types import JSON

if TYPE_CHECKING:  # psycopg is loaded only for a PostgreSQL store
    from corral.locks.pg import PgLockManager

log = logging.getLogger(__name__)


async def _close_locks(made: Sequence[Controller]) -> None:
    for ctl in made:  # a controller that failed to start: its PostgreSQL locks' threads end
        if not isinstance(ctl.locks, LockManager):
            await ctl.locks.close()


class Controller:
    """The daemon's core and the facade every surface uses. Build it with :meth:`create`."""

    def __init__(
        self,
        config: CorralConfig,
        store: Store,
        backends: Mapping[str, GuardedBackend],
        *,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
        owns_store: bool = True,
        max_running: int | None = None,
        recover: bool = True,
        adopt: bool = False,
        claim: ownership.StoreClaim | None = None,
        cluster: wiring.ClusterParts | None = None,
    ) -> None:
        """Wire the parts; prefer :meth:`create`, which also recovers and reconciles."""
        missing = sorted(set(config.pools) - set(backends))
        if missing:
            raise exceptions.ConfigError(f"no backend for pools {missing}")
        self.config = config
        self.store = store
        self.clock = clock
        self.tick = tick
        self.events = EventBus()
        self.locks: LockManager | PgLockManager = LockManager()
        self._fence_holder: Callable[[], str] | None = None
        """Who acts under this host's lock grants (its incarnation), when their fencing tokens
        are durable and cluster-wide; ``None``: backends are given no fence."""
        running = max_running or max(16, sum(p.max_starting + 8 for p in config.pools.values()))
        self.maintains = recover
        """Whether this controller preallocates and maintains (False: it only assigns)."""
        self.adopt = adopt
        """Whether reconciliation sweeps machines whose names the store never issued."""
        self._claim = claim
        engine_store = store if recover else wiring.without_recovery(store)
        self.cluster = cluster
        """This host's membership, leadership and takeover (issue 11; ``None``: secondary)."""
        if cluster is not None and cluster.own is not None:
            engine_store = wiring.owning(store, cluster.own)  # only its own tasks at start
        if cluster is not None and parse_store_url(store.url).kind == "postgresql":
            from corral.locks.pg import PgLockManager

            # tasks' locks (vm/<name>, ...) must exclude each other across hosts: the lock
            # table lives in PostgreSQL, bound to this host's membership lease
            self.locks = PgLockManager(store.url, member=cluster.member)
            member = cluster.member
            self._fence_holder = lambda: member.key  # a rejoin makes a new incarnation
        self.tasks = TaskEngine(
            engine_store,
            self.locks,
            REGISTRY,
            deps=self,
            max_running=running,
        )
        self._backends = dict(backends)
        self._limits = {name: pool.limits() for name, pool in config.pools.items()}
        self._owns_store = owns_store
        self._background: set[asyncio.Task[None]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._samples: list[tuple[str, str, float, float]] = []
        self._counts: dict[tuple[str, str], int] = {}
        self._failures: dict[str, str] = {}
        # a secondary controller shares its store by definition; PostgreSQL may be shared
        self._shared = not recover or parse_store_url(store.url).kind == "postgresql"
        self._started = False
        self._stopped = False
        self.operators = Operators(self)
        self.registry = Registry(self)
        self.reloader = Reloader(self)  # reload hook (corral.controller.reload)
        self.maintenance = Maintenance(self)
        self.preallocation = Preallocator(self)
        self.assignment = Assigner(self)
        self.vm_tasks = VMTasks(self)
        self.ticket_ops = Tickets(self)
        self.crosshost = CrossHost(self)  # wake-ups from and to other hosts (PostgreSQL)
        self._unsubscribe = self.tasks.subscribe(self._on_task)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def create(
        cls,
        config: CorralConfig,
        *,
        store: Store | None = None,
        backends: Mapping[str, Backend] | None = None,
        clock: Callable[[], float] = time.time,
        tick: float = 1.0,
        poll_interval: float | None = None,
        recover: bool = True,
        adopt: bool = False,
    ) -> Controller:
        """Open the store and backends, recover unfinished tasks and reconcile every backend.

        ``backends`` (pool name → backend) replaces the configured ones (tests); ``recover=False``
        makes a secondary controller sharing a database: it creates, assigns and closes tickets
        but neither recovers the others' tasks, reconciles, preallocates nor maintains.
        ``adopt``: reconciliation terminates machines whose names the store never issued too
        (by default it reports them; see :mod:`corral.pools.restart`).
        """
        opened = store is None
        if store is None:
            prepare_store_url(config.store)  # ./.corral/ made for the default store only
        # own the store and kill an earlier owner's leftover commands before recovering anything
        claim = await recovery.take_over(config) if opened and recover else None
        try:
            the_store = store if store is not None else await open_store(config.store)
        except BaseException:
            if claim is not None:
                claim.release()
            raise
        guarded: dict[str, GuardedBackend] = {}
        cluster: wiring.ClusterParts | None = None
        try:
            base = config.base_dir if config.base_dir is not None else Path.cwd()
            for name, pool in config.pools.items():
                raw = backends[name] if backends is not None and name in backends else None
                if raw is None:
                    raw = load_backend(
                        pool.backend.type, pool.backend.options, pool=name, base_dir=base
                    )
                raw.attach_store(the_store.url)  # cloud rate limits, quotas: cluster-wide on PG
                guarded[name] = wiring.guard(pool, raw, poll_interval=poll_interval)
            recovery.mark(guarded, claim)
            made: list[Controller] = []
            if recover:
                cluster = await wiring.join_cluster(config, the_store, lambda: made[0].tasks)
            ctl = cls(
                config,
                the_store,
                guarded,
                clock=clock,
                tick=tick,
                owns_store=opened,
                recover=recover,
                adopt=adopt,
                claim=claim,
                cluster=cluster,
            )
            made.append(ctl)
            await ctl._start_locks()  # before recovery: recovered tasks take locks again
            await ctl.tasks.start()
            if recover:
                ctl.vm_tasks.note_recovered()
                await ctl.reconcile()
        except BaseException:
            if cluster is not None:
                await _close_locks(made)
                await cluster.member.stop()
                await cluster.member.repo.close()
            for backend in guarded.values():
                await backend.aclose()
            if opened:
                await the_store.close()
            if claim is not None:
                claim.release()
            raise
        return ctl

    async def _start_locks(self) -> None:
        if not isinstance(self.locks, LockManager):
            await self.locks.start()

    async def start(self) -> None:
        """Start preallocating, assigning and the maintenance loop."""
        if self._started:
            return
        self._started = True
        await self.operators.load()
        await self.crosshost.start()
        if self.cluster is not None:
            self._start_cluster(self.cluster)
        if self.maintains:
            self.maintenance.start()
            for name in self._limits:
                self.kick_spawn(name)
        else:
            self._spawn_bg(self._assign_ticker())
        self.kick_assign()

    def _start_cluster(self, cluster: wiring.ClusterParts) -> None:
        def changed(pool: str, leads: bool) -> None:
            if leads and not self._stopped:  # a new leader tops up and maintains at once
                self.kick_spawn(pool)
                self.maintenance.wake()

        cluster.leadership.on_change = changed
        cluster.member.observe(cluster.leadership.update)
        if cluster.takeover is not None:
            cluster.member.observe(cluster.takeover.update)
            cluster.member.observe(takeover.OrphanWatch(cluster.member, self).update)
        cluster.member.start()

    async def _stop_cluster(self, cluster: wiring.ClusterParts) -> None:
        await cluster.member.stop(resign=False)
        if cluster.takeover is not None:
            await cluster.takeover.close()
        await cluster.leadership.release_all()  # the next leader takes over at once
        await cluster.member.stop(resign=True)
        await cluster.member.repo.close()

    def leads(self, pool: str) -> bool:
        """Whether this host runs ``pool``'s maintenance: always on a single-host store; in a
        cluster, while it holds the pool's leadership lease (:mod:`.leadership`)."""
        cluster = self.cluster
        if cluster is None or cluster.takeover is None:
            return self.maintains
        return cluster.leadership.leads(pool)

    async def check_leadership(self, pool: str) -> None:
        """Confirm, in the store, that this host still leads ``pool`` under its epoch before a
        write on the leadership's behalf; ``StaleEpoch`` (logged) otherwise. A no-op on a
        single-host store."""
        cluster = self.cluster
        if cluster is not None and cluster.takeover is not None:
            await cluster.leadership.check(pool)

    def lease_fence(self, pool: str) -> LeaseFence | None:
        """The fence of a write on behalf of ``pool``'s leadership: checked by the store in the
        write's own transaction (``None`` on a single-host store; ``StaleEpoch`` when this host
        does not lead ``pool``)."""
        cluster = self.cluster
        if cluster is None or cluster.takeover is None:
            return None
        epoch = cluster.leadership.epoch(pool)
        if epoch is None:
            raise exceptions.StaleEpoch(f"host {cluster.member.host_id} does not lead {pool!r}")
        return LeaseFence(leadership.lease_name(pool), cluster.member.session, epoch)

    def lock_fence(self, key: str, token: int | None) -> LockFence | None:
        """The fence of a write a task makes while it holds lock ``key`` with ``token``:
        checked by the store in the write's own statement against the cluster's lock table.
        ``None`` when the locks are not that table (a single-host store, in-process locks) or
        the task holds no such grant."""
        if token is None or isinstance(self.locks, LockManager):
            return None
        return LockFence(key, token)

    async def list_hosts(self) -> list[leadership.HostView]:
        """Every host of the cluster (this one alone on a single-host store) and what it leads;
        empty for a secondary controller (it is no member)."""
        if self.cluster is None:
            return []
        return await leadership.host_views(self.cluster.member)

    async def _assign_ticker(self) -> None:
        # A secondary controller hears of VMs made ready by another process only through the
        # store, so it re-runs the assignment every tick.
        while not self._stopped:
            await asyncio.sleep(self.tick)
            self.kick_assign()

    async def stop(self) -> None:
        """Stop the loops and the engine (in-flight tasks stay persisted), close everything."""
        if self._stopped:
            return
        self._stopped = True
        for timer in self._timers:
            timer.cancel()
        self.vm_tasks.close()
        if self.cluster is not None:
            await self._stop_cluster(self.cluster)
        await self.crosshost.close()
        await self.maintenance.stop()
        await self.assignment.close()
        await self.preallocation.close()
        runners = list(self._background)
        for job in runners:
            job.cancel()
        await asyncio.gather(*runners, return_exceptions=True)
        self._unsubscribe()
        await self.tasks.close()
        if not isinstance(self.locks, LockManager):
            await self.locks.close()
        try:
            await self.flush_stats()
        except exceptions.CorralError as exc:
            log.warning("could not save the last statistics: %s", exc)
        for backend in self._backends.values():
            try:
                await backend.aclose()
            except exceptions.BackendError as exc:
                log.warning("closing backend of pool %s: %s", backend.pool, exc)
        self.ticket_ops.cancel_waiters()
        if self._owns_store:
            await self.store.close()
        if self._claim is not None:
            self._claim.release()

    def _spawn_bg(self, coro: Coroutine[object, object, None]) -> None:
        job = asyncio.get_running_loop().create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background_done)

    def _background_done(self, job: asyncio.Task[None]) -> None:
        self._background.discard(job)
        if not job.cancelled() and (exc := job.exception()) is not None:
            # a background duty failed (the store was down, a bug): log it, keep running;
            # maintenance re-drives whatever it left undone
            log.error("background work failed: %r", exc, exc_info=exc)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` ran."""
        return self._started

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` ran (or is running)."""
        return self._stopped

    # --- hooks used by the steps (corral.controller.steps.VMHooks) ---------------------------

    @property
    def shared_store(self) -> bool:
        """Whether other controllers may share the store (PostgreSQL, or this controller is a
        secondary one): then changes they make are found by re-reading; otherwise the store is
        this controller's own and every change is known as it happens."""
        return self._shared

    def backend(self, pool: str) -> GuardedBackend:
        """The guarded backend of ``pool``."""
        try:
            return self._backends[pool]
        except KeyError:
            raise exceptions.PoolNotFound(f"no pool named {pool!r}") from None

    def all_limits(self) -> list[PoolLimits]:
        """The allocation limits of every pool."""
        return list(self._limits.values())

    def backends(self) -> dict[str, GuardedBackend]:
        """The guarded backend of every pool."""
        return dict(self._backends)

    def limits(self, pool: str) -> PoolLimits:
        """The allocation limits of ``pool``."""
        self.config.pool(pool)
        return self._limits[pool]

    def pool_config(self, pool: str) -> PoolConfig:
        """The configuration of ``pool``."""
        return self.config.pool(pool)

    async def apply_vm(
        self,
        name: str,
        event: VMEvent,
        *,
        current: str | None = None,
        fence: WriteFence | None = None,
        **changes: object,
    ) -> VMRow | None:
        """Move VM ``name`` by ``event``: the one way a VM changes.

        The lifecycle table (:mod:`corral.pools.lifecycle`) gives the states the write is
        conditional on (only ``current`` when the caller read the VM in that state; an event the
        table lacks for it raises) and the new state; once written, the move's effects are carried
        out. ``None`` when the VM was not in a state the event applies to (nothing changed).
        ``fence``: a write on behalf of the pool's leadership (:meth:`lease_fence`) or of a task
        holding the VM's lock (:meth:`lock_fence`), refused by the store (``StaleEpoch``,
        ``StaleToken``, logged) once it no longer holds.
        """
        move = vm_move(event, current)
        if move.state is not None:
            changes["state"] = move.state
            changes.setdefault("state_since", self.clock())
        row = await self.store.pools.update_vm(
            name, expect=move.expect, changes=changes, fence=fence
        )
        if row is not None:
            await self.vm_moved(row, move.effects)
        return row

    async def vm_moved(self, row: VMRow, effects: Sequence[Effect]) -> None:
        """Carry out the effects of a move the store wrote (see :meth:`apply_vm`)."""
        self.vm_changed(row, effects)
        if Effect.SUBMIT_RELEASE in effects:
            await self.submit_release(row.name)
        if Effect.SUBMIT_TERMINATE in effects:
            if self.busy(row.name):
                # the task holding the VM (a release-cleanup, a spawn's rollback) ends first;
                # the termination is submitted then and waits for the VM's lock
                self.terminate_later(row.name, 0.0)
            else:
                await self.submit_terminate(row.name, row=row)

    def vm_changed(self, row: VMRow, effects: Sequence[Effect] | None = None) -> None:
        """Publish a VM change and carry out the move's synchronous effects (kicks, forgetting);
        without ``effects``, those of any move into the VM's state."""
        if effects is None:
            effects = effects_into(row.state)
        if Effect.FORGET in effects:
            self.vm_tasks.gone(row.name)
            self.maintenance.forget(row.name)
        self.events.publish(
            Event("vm", row.name, row.state, self.clock(), {"pool": row.pool, "ticket": row.ticket})
        )
        if row.pool in self._limits:
            if Effect.KICK_ASSIGN in effects:
                self.assignment.kick_if_waiting()  # a VM ready or freed serves a waiting one
            if Effect.KICK_SPAWN in effects:
                self.kick_spawn(row.pool)

    async def spawn_finished(
        self, pool: str, ok: bool, seconds: float | None, reason: str | None = None
    ) -> None:
        """Record a spawn's outcome; failures hold the pool's next spawns back (backoff)."""
        await self.preallocation.finished(pool, ok, seconds, reason)

    def note_failure(self, name: str, reason: str) -> None:
        """Remember why the spawn of ``name`` failed (its rollback records it on the VM)."""
        self._failures[name] = reason

    def take_failure(self, name: str) -> str | None:
        """Why the spawn of ``name`` failed, if this process saw it fail (forgotten once read)."""
        return self._failures.pop(name, None)

    def record(self, pool: str, kind: str, value: float) -> None:
        """Buffer a statistics sample (flushed to the store every tick and when read)."""
        self._samples.append((pool, kind, value, self.clock()))

    def count(self, pool: str, counter: str, by: int = 1) -> None:
        """Buffer a counter increment (flushed with the samples)."""
        self._counts[(pool, counter)] = self._counts.get((pool, counter), 0) + by

    def fence(self, token: int | None) -> Fence | None:
        """The fence of a backend call made under a lock grant with ``token``: only with the
        PostgreSQL lock manager, whose tokens are durable and strictly increasing per VM across
        hosts (the in-process manager's restart with the process: they would fence nothing)."""
        if token is None or self._fence_holder is None:
            return None
        return Fence(token, self._fence_holder())

    async def flush_stats(self) -> None:
        """Write the buffered statistics in one transaction."""
        samples, counts = self._samples, self._counts
        if not samples and not counts:
            return
        self._samples, self._counts = [], {}
        await self.store.pools.record_stats(samples, counts)

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` after ``delay`` seconds unless the controller stops first."""
        if self._stopped:
            return
        loop = asyncio.get_running_loop()
        handle: asyncio.TimerHandle

        def run() -> None:
            self._timers.discard(handle)
            fn()

        handle = loop.call_later(max(0.0, delay), run)
        self._timers.add(handle)

    # --- VM tasks (corral.controller.vmtasks) -------------------------------------------------

    def _on_task(self, event: TaskEvent) -> None:
        info = event.info
        data: dict[str, JSON] = {"verb": info.verb, "tag": info.tag}
        self.events.publish(Event("task", info.id, info.state.value, self.clock(), data))
        self.vm_tasks.on_task(event)

    def background(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` as a background task of the controller (cancelled by :meth:`stop`)."""
        self._spawn_bg(coro)

    def terminate_later(self, name: str, delay: float) -> None:
        """Submit a termination task for ``name`` after ``delay`` seconds (one pending per VM)."""
        self.vm_tasks.terminate_later(name, delay)

    async def submit_terminate(self, name: str, *, row: VMRow | None = None) -> None:
        """Submit a termination task for a VM in ``terminating`` (``row``: just moved there)."""
        await self.vm_tasks.terminate(name, row=row)

    async def submit_release(self, name: str) -> None:
        """Submit a release-cleanup task for a VM in ``releasing``."""
        await self.vm_tasks.release(name)

    async def submit_spawn(self, row: VMRow) -> None:
        """Submit the spawn task of a VM just recorded as ``spawning``."""
        await self.vm_tasks.spawn(row)

    def busy(self, name: str) -> bool:
        """Whether an unfinished task of this controller works on VM ``name``."""
        return self.vm_tasks.busy(name)

    def busy_vms(self) -> set[str]:
        """The VMs an unfinished task of this controller works on."""
        return self.vm_tasks.busy_vms()

    def idle(self) -> bool:
        """True when no task, retry or runner of this controller has work in flight (a spawn
        backoff timer does not count: it only re-plans)."""
        return (
            self.vm_tasks.idle
            and not self._background
            and self.assignment.idle
            and self.preallocation.idle
            and all(info.done for info in self.tasks.list())
        )

    # --- preallocation and assignment (corral.controller.preallocation / .assignment) -------

    def pool_names(self) -> Sequence[str]:
        """The pools this controller runs."""
        return list(self._limits)

    def kick_spawn(self, pool: str) -> None:
        """Re-plan ``pool``'s preallocation soon (coalesced with other kicks)."""
        if self.leads(pool):
            self.preallocation.kick(pool)
        if not self.maintains or not self.leads(pool):
            self.crosshost.spawn_wanted(pool)  # the host that preallocates must hear of it

    def consumed(self, pool: str) -> None:
        """A ticket took a VM of ``pool``: update the demand estimate and re-plan the pool."""
        self.preallocation.consumed(pool)

    def expected_in_flight(self, pool: str) -> int:
        """Spawns the measured demand of ``pool`` needs in flight now (Little's law)."""
        return self.preallocation.expected(pool)

    def wake_maintenance(self) -> None:
        """Run the maintenance duties now rather than at the next tick."""
        self.maintenance.wake()

    def pool_mode(self, pool: str) -> PoolMode:
        """How ``pool`` operates now (active, paused, draining)."""
        return self.operators.mode(pool)

    def removed_pools(self) -> frozenset[str]:
        """Pools removed by a configuration reload and draining away (no new tickets)."""
        return frozenset(self.reloader.removing)

    def kick_assign(self) -> None:
        """Re-run the assignment soon (coalesced: one runner, a dirty flag, no lost wake-up)."""
        self.assignment.kick()

    def kick_assign_if_waiting(self) -> None:
        """Re-run the assignment soon unless no ticket is known to wait (see
        :meth:`corral.controller.assignment.Assigner.kick_if_waiting`)."""
        self.assignment.kick_if_waiting()

    async def assign_once(self) -> int:
        """Match waiting tickets with ready VMs once; returns how many were assigned."""
        return await self.assignment.assign_once()

    async def insert_ticket(
        self, row: TicketRow, inserted: Callable[[TicketRow], None]
    ) -> Ticket | None:
        """Store a new ticket with an assignment round in the same store unit (see
        :meth:`corral.controller.assignment.Assigner.insert`); the ticket if assigned."""
        return await self.assignment.insert(row, inserted)

    def ticket_changed(
        self,
        ticket_id: str,
        state: str,
        data: Mapping[str, JSON],
        *,
        ticket: Ticket | None = None,
    ) -> None:
        """Publish a ticket's change and wake its waiters (with the new ticket when known)."""
        self.ticket_ops.changed(ticket_id, state, data, ticket=ticket)
        self.crosshost.ticket_changed(ticket_id)

    # --- tickets (facade; corral.controller.tickets) -----------------------------------------

    async def create_ticket(
        self,
        *,
        owner: str,
        pool: str | None = None,
        tags: Sequence[str] = (),
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
        meta: Mapping[str, str] | None = None,
        exclusive: bool = False,
        count: int = 1,
        requests: Sequence[Request] | None = None,
    ) -> Ticket:
        """Queue a request for one VM of ``pool`` or of any pool whose tags include ``tags``;
        ``meta`` is small key/value metadata kept with it and searchable. ``count``: that many
        VMs of one pool, all together; ``exclusive``: whole VMs of a pool with ``slots``;
        ``requests``: a list ticket (one VM set per pool or tag entry, all together)."""
        return await self.ticket_ops.create(
            owner=owner,
            pool=pool,
            tags=tags,
            sandbox=sandbox,
            priority=priority,
            ttl=ttl,
            meta=meta,
            exclusive=exclusive,
            count=count,
            requests=requests,
        )

    async def get_ticket(self, ticket_id: str, /) -> Ticket:
        """One ticket (``TicketNotFound`` otherwise)."""
        return await self.ticket_ops.get(ticket_id)

    async def wait_ticket(self, ticket_id: str, /, timeout: float | None = None) -> Ticket:
        """Wait, event-driven, until the ticket leaves ``waiting``; ``TicketTimeout`` after
        ``timeout`` seconds."""
        return await self.ticket_ops.wait(ticket_id, timeout)

    async def renew_ticket(self, ticket_id: str, /, *, known: Ticket | None = None) -> Ticket:
        """Extend an open ticket's lease by its ``ttl`` from now (``known``: the ticket as the
        caller just read it, which saves reading it again)."""
        return await self.ticket_ops.renew(ticket_id, known=known)

    async def close_ticket(self, ticket_id: str, /) -> Ticket:
        """Close an assigned ticket (its VM is reused or terminated) or cancel a waiting one;
        a ticket already over is returned unchanged."""
        return await self.ticket_ops.close(ticket_id)

    async def end_ticket(
        self,
        ticket: Ticket,
        state: TicketState,
        reason: str | None,
        *,
        reuse: bool = True,
        fence: LeaseFence | None = None,
    ) -> Ticket | None:
        """Move an open ticket to ``state`` and free its VM; ``None`` if it changed meanwhile.
        ``fence``: on behalf of the pool's leader (lease expiry, a failed livecheck)."""
        return await self.ticket_ops.end(ticket, state, reason, reuse=reuse, fence=fence)

    async def list_tickets(
        self,
        *,
        owner: str | None = None,
        state: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> list[Ticket]:
        """Tickets by priority then age, optionally of one owner, in one state, and carrying
        every ``meta`` pair."""
        return await self.ticket_ops.list(owner=owner, state=state, meta=meta)

    # --- VMs (facade and lookups) ------------------------------------------------------------

    async def get_vm(self, name: str, /) -> VM:
        """One VM (``VMNotFound`` otherwise)."""
        row = await self.store.pools.get_vm(name) if isinstance(name, str) else None
        if row is None:
            raise exceptions.VMNotFound(f"no VM named {name!r}")
        return self._with_machine_state(records.vm(row))

    def assigned_vm(self, name: str, /) -> VM | None:
        """VM ``name`` as this controller's assignment read it when it handed the VM out, if it
        did so recently (``None`` otherwise): its address and handle, fixed once the VM is up,
        without a store read; its state and ticket may have moved on since."""
        return self.assignment.handed_out(name)

    async def list_vms(self, *, pool: str | None = None, state: str | None = None) -> list[VM]:
        """VMs, optionally of one pool and in one state."""
        return await self.find_vms(pool=pool, states=None if state is None else [state])

    async def find_vms(
        self,
        *,
        pool: str | None = None,
        states: Sequence[str] | None = None,
        address: str | None = None,
        ticket: str | None = None,
        ticket_meta: Mapping[str, str] | None = None,
    ) -> list[VM]:
        """VMs by pool, states, address and/or ticket (Copr's lookups); with ``ticket_meta``,
        the VMs of the open tickets carrying that metadata (Copr's ``get_vm_by_task_id``)."""
        if ticket_meta is not None:
            found = await self.list_tickets(meta=ticket_meta)
            names = {t.vm for t in found if t.open and t.vm is not None}
            vms = await self.find_vms(pool=pool, states=states, address=address, ticket=ticket)
            return [v for v in vms if v.name in names]
        if pool is not None:
            self.config.pool(pool)
        for s in states or ():
            try:
                VMState(s)
            except ValueError:
                raise exceptions.InvalidInput(
                    f"unknown VM state {s!r} (known: {', '.join(VMState)})"
                ) from None
        rows = await self.store.pools.list_vms(
            pool=pool, states=states, address=address, ticket=ticket
        )
        return [self._with_machine_state(records.vm(r)) for r in rows]

    def _with_machine_state(self, vm: VM) -> VM:
        """``vm`` with its backend's own state of the machine, when the backend tracks one."""
        backend = self._backends.get(vm.pool)
        state = None if backend is None or not vm.alive else backend.backend.machine_state(vm.name)
        return vm if state is None else dataclasses.replace(vm, machine_state=state)

    async def _fail_holders(self, vm: VM, reason: str) -> None:
        """Fail every ticket holding ``vm`` (a shared VM has several), reusing nothing."""
        for held_by in vm.tickets or (() if vm.ticket is None else (vm.ticket,)):
            ticket = await self.get_ticket(held_by)
            await self.end_ticket(ticket, TicketState.FAILED, reason, reuse=False)

    async def terminate_vm(
        self, name: str, /, *, if_states: Sequence[str] | None = None, actor: str | None = None
    ) -> VM:
        """Start terminating a VM, also one still spawning; a VM in use fails its ticket.

        With ``if_states`` (Copr's ``allowed_pre_state``) only a VM in one of those states is
        terminated; in any other state nothing changes and :class:`VMStateMismatch` says which
        state it is in.
        """
        allowed = None if if_states is None else _vm_states(if_states)
        if actor is not None:
            await self.operators.audit(actor, "terminate", "vm", name)
        for _ in range(5):
            vm = await self.get_vm(name)
            if allowed is not None and vm.state not in allowed:
                raise exceptions.VMStateMismatch(
                    f"VM {name} is {vm.state}, not {' or '.join(sorted(allowed))}: "
                    "nothing was changed"
                )
            if not vm.alive:
                return vm
            if vm.state is VMState.TERMINATING:
                return vm
            if vm.state is VMState.IN_USE and vm.ticket is not None:
                await self._fail_holders(vm, "VM terminated by an operator")
                row = await self.store.pools.get_vm(name)
                if row is not None and row.state == VMState.TERMINATING:
                    return records.vm(row)
                continue
            if vm.state is VMState.SPAWNING:
                row = await self.apply_vm(name, VMEvent.STOP_REQUESTED, reason=TERMINATE_REQUESTED)
                if row is None:
                    continue
                task = self.vm_tasks.task_of(name)
                if task:
                    # the spawn's rollback terminates what the backend made
                    info = await self.tasks.stop(task)
                    if info.state is TaskState.FINISHED:
                        continue  # it came up just now: terminate it as a ready VM
                    return records.vm(row)
            row = await self.apply_vm(
                name, VMEvent.TERMINATE_REQUESTED, current=vm.state, reason=TERMINATE_REQUESTED
            )
            if row is not None:
                return records.vm(row)
        raise exceptions.Conflict(f"VM {name} keeps changing; try again")

    # --- operators (facade; corral.controller.operators) --------------------------------------

    async def pause_pool(self, pool: str, /, *, actor: str = "operator") -> None:
        """Stop preallocating ``pool`` (its ready VMs still serve tickets)."""
        await self.operators.set_mode(pool, PoolMode.PAUSED, actor=actor)

    async def resume_pool(self, pool: str, /, *, actor: str = "operator") -> None:
        """Undo a pause or a drain: the pool preallocates and reuses again."""
        await self.operators.set_mode(pool, PoolMode.ACTIVE, actor=actor)

    async def drain_pool(
        self, pool: str, /, *, actor: str = "operator", dry_run: bool = False
    ) -> list[VM]:
        """Drain ``pool``: stop preallocating, terminate its idle VMs now and every VM once its
        ticket ends (no reuse). Returns the idle VMs terminated now (with ``dry_run``: the ones
        that would be, changing nothing)."""
        plan = await self.operators.drain_plan(pool)
        if dry_run:
            return plan
        await self.operators.set_mode(pool, PoolMode.DRAINING, actor=actor)
        await self.operators.drain_idle(pool)
        return plan

    async def terminate_vms(
        self,
        *,
        pool: str,
        states: Sequence[str] | None = None,
        unused: bool = False,
        actor: str = "operator",
        dry_run: bool = False,
    ) -> list[VM]:
        """Terminate a pool's VMs in bulk (resalloc-maint's ``resource-delete --all/--unused``):
        every alive VM of ``pool``, or only those in ``states``, or (``unused``) only those that
        never served a ticket. Returns the VMs chosen (``dry_run``: changing nothing); a VM that
        changed state meanwhile is skipped, not retried."""
        self.config.pool(pool)
        wanted = _vm_states(states) if states is not None else ALIVE_VM_STATES
        chosen = [
            vm
            for vm in await self.find_vms(pool=pool, states=values(wanted & ALIVE_VM_STATES))
            if not (unused and vm.uses > 0) and vm.state is not VMState.TERMINATING
        ]
        if dry_run:
            return chosen
        await self.operators.audit(
            actor,
            "terminate-bulk",
            "pool",
            pool,
            f"{len(chosen)} VMs"
            + (" (unused)" if unused else "")
            + ("" if states is None else f" in {', '.join(sorted(wanted))}"),
        )
        done = []
        for vm in chosen:
            try:
                done.append(await self.terminate_vm(vm.name, if_states=[vm.state.value]))
            except exceptions.VMStateMismatch:
                continue  # it moved meanwhile: leave it to whoever moved it
        return done

    async def hold_vm(self, name: str, /, seconds: float, *, actor: str = "operator") -> VM:
        """Keep VM ``name`` for debugging for ``seconds`` (Nodepool's hold)."""
        return await self.operators.hold(name, seconds, actor=actor)

    async def release_hold(self, name: str, /, *, actor: str = "operator") -> VM:
        """End a hold: a held VM is terminated; one in use is no longer kept after its ticket."""
        return await self.operators.release_hold(name, actor=actor)

    async def audit(
        self, *, kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """Operators' actions, newest first (of one VM or pool if given)."""
        return list(await self.operators.history(kind=kind, target=target, limit=limit))

    # --- machines made elsewhere, forgotten, returned (corral.controller.registry) -------------

    async def register_vm(
        self, pool: str, name: str, address: str, *, actor: str = "operator"
    ) -> VM:
        """Add a machine made elsewhere to ``pool`` once it passes a livecheck (external:
        never destroyed; forgotten when it retires)."""
        return await self.registry.register(pool, name, address, actor=actor)

    async def forget_vm(self, name: str, /, *, force: bool = False, actor: str = "operator") -> VM:
        """Stop tracking VM ``name`` without touching it (``force``: also one in use, whose
        ticket fails); its record stays as a tombstone the leak sweep respects."""
        return await self.registry.forget(name, force=force, actor=actor)

    async def return_machine(
        self, name: str, /, *, actor: str = "operator"
    ) -> tuple[str, MachineStatus]:
        """Put a static pool's machine (or the machine of VM ``name``) back in service:
        ``(pool, status)``."""
        return await self.registry.return_machine(name, actor=actor)

    async def machine_maintenance(
        self, name: str, /, reason: str, *, actor: str = "operator"
    ) -> tuple[str, MachineStatus]:
        """Take a static pool's machine (or the machine of VM ``name``) out of service with
        ``reason``: ``(pool, status)``."""
        return await self.registry.maintenance(name, reason, actor=actor)

    # --- pools (facade) ----------------------------------------------------------------------

    async def list_pools(self) -> list[PoolStatus]:
        """Every pool's status, by name (a pool removed by a reload while this reads is left
        out, not an error of the whole listing)."""
        found = []
        for name in sorted(self._limits):
            try:
                found.append(await self.get_pool(name))
            except exceptions.PoolNotFound:
                continue  # it finished draining and went away meanwhile
        return found

    async def get_pool(self, name: str, /) -> PoolStatus:
        """One pool's limits, VM counts, queue, statistics and info (``PoolNotFound``)."""
        return await views.pool_status(self, name)

    async def set_pool_info(
        self, pool: str, key: str, value: JSON, *, actor: str | None = None
    ) -> None:
        """Store a per-pool key/value pair (``None`` deletes it); keys and values are bounded
        (:mod:`corral.controller.poolinfo`); with ``actor``, audited."""
        self.config.pool(pool)
        poolinfo.check_key(key)
        text = None if value is None else poolinfo.encode(value)
        if text is not None:
            poolinfo.check_room(set(await self.store.pools.get_info(pool)), key)
        await self.store.pools.set_info(pool, key, text)
        if actor is not None:
            await self.operators.audit(actor, "info", "pool", pool, key)

    async def get_pool_info(self, pool: str) -> dict[str, JSON]:
        """Every per-pool key/value pair."""
        self.config.pool(pool)
        raw = await self.store.pools.get_info(pool)
        return {k: json.loads(v) for k, v in sorted(raw.items())}

    async def summary(self, *, pool: str | None = None) -> str:
        """Every pool (or only ``pool``) and its VMs in a human-readable form (Copr's
        ``VmManager.info``)."""
        return await views.summary(self, pool=pool)

    # --- reload hooks (corral.controller.reload) ----------------------------------------------

    async def reload(self, config: CorralConfig, *, actor: str = "operator") -> ReloadReport:
        """Apply a new, validated configuration's pools without a restart (added pools start,
        changed ones apply to new VMs, removed ones drain and then disappear)."""
        return await self.reloader.apply(config, actor=actor)

    def replace_pools(self, config: CorralConfig, backends: Mapping[str, GuardedBackend]) -> None:
        """Swap in the configuration and backends a reload computed (only the reloader calls
        this); new backends get the store's marker as at start."""
        recovery.mark({n: b for n, b in backends.items() if n not in self._backends}, self._claim)
        self.config = config
        self._backends = dict(backends)
        self._limits = {name: pool.limits() for name, pool in config.pools.items()}

    # --- reconciliation ----------------------------------------------------------------------

    async def sweep(self) -> int:
        """Terminate machines the backends have and the store does not know (the leak sweep)."""
        return await recovery.sweep(self)

    async def reconcile(self, *, dry_run: bool = False) -> dict[str, reconciliation.ReconcilePlan]:
        """Compare the store with every backend's inventory and act on the differences (with
        ``dry_run``: only say what would be done)."""
        return await recovery.reconcile(self, dry_run=dry_run)


def _vm_states(states: Sequence[str]) -> frozenset[VMState]:
    """``states`` as VM states (``InvalidInput`` naming an unknown one, or an empty list)."""
    if isinstance(states, str) or not states:
        raise exceptions.InvalidInput("if_states must be a non-empty list of VM states")
    found = set()
    for state in states:
        try:
            found.add(VMState(state))
        except ValueError:
            raise exceptions.InvalidInput(
                f"unknown VM state {state!r} (known: {', '.join(VMState)})"
            ) from None
    return frozenset(found)
