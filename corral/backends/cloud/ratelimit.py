"""A per-account rate limit on cloud API calls (Nodepool's ``rate``), shared by every pool.

:class:`TokenBucket` is the pure core: no clock, no lock, no asyncio; the caller passes ``now``.
It works by *reservation*: each call reserves the next free slot and is told how long to wait
for it, so callers are served in arrival order and the bucket never has to wake anybody up.
Over any window of ``w`` seconds at most ``burst + rate * w`` calls are granted.
:func:`next_slot` is its arithmetic alone, shared with the database's copy of the bucket
(:mod:`corral.backends.cloud.shared`).

:class:`RateLimiter` is the shell: a lock (the bucket is shared by event loops and SDK threads)
and a monotonic clock; :meth:`RateLimiter.acquire` queues the caller by priority on the running
loop and hands out one token at a time,
:meth:`RateLimiter.wait_sync` sleeps in a worker thread (the cloud backends pass it in the
thread, right before the request, so the limit holds at the wire).
:func:`limiter_for` keeps one limiter per account key in this process, so two pools on one account
share one bucket.

When the store is PostgreSQL, the backends :meth:`RateLimiter.share` the limiter with a
:class:`ClusterGate` (``shared.SharedCloud``), the account's bucket for every host together.
The limiter's dispatcher then takes each token's *cluster slot* on the event loop, for its best
waiter, before the call gets a worker thread, and holds at most one slot at a time: no thread
ever sleeps for a slot, and no host runs ahead of the others with a queue of reservations. The
cluster's bucket grants a slot only when it is due (:meth:`TokenBucket.try_reserve`), and a
priority-0 call (a describe, a terminate) may take it :data:`HEAD_START` seconds before it is
due while a create (priority 1) must wait until it is: when hosts compete for a slot, the
describes and terminates of any host get it before the creates of every host. Each grant is a
:class:`Permit` carrying its slot's time; a call that reaches the wire's gate more than
:data:`LATE_MARGIN` after it takes a new slot (:class:`MissedSlot`) instead of leaving late
beside the other hosts' calls of the next slots.
:class:`MemoryClusterGate` is the same gate in memory (one process; tests).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from corral import exceptions

LATE_MARGIN = 0.1
"""Seconds after its cluster slot that a call may still leave. A call that reaches the gate in
its worker thread, or the SDK's last step before the request leaves, later than that (its thread
started late: a busy interpreter, a full thread pool) takes a new slot instead
(:class:`MissedSlot`): sent late, it would meet the calls of the slots after its own at the wire,
and on several hosts no host's gate sees the others' calls. The cluster's bucket keeps
``rate * LATE_MARGIN`` of its burst in reserve for the calls that leave late within the margin
(:meth:`RateLimiter.cluster_burst`)."""

HEAD_START = 0.2
"""Seconds before its cluster slot is due that a priority-0 call may take it. Creates take a
slot only once it is due, so while any host has a describe or a terminate waiting, the next slot
is that call's; the head start must exceed how late a host's loop may wake (a loaded machine)."""


def lead(priority: int) -> float:
    """How long before it is due a call of ``priority`` may take a cluster slot."""
    return HEAD_START if priority <= 0 else 0.0


@dataclass(frozen=True, slots=True)
class Permit:
    """One call granted by :meth:`RateLimiter.acquire`: what the worker thread checks before the
    request leaves (:meth:`RateLimiter.wait_sync`)."""

    priority: int
    seq: int
    """The caller's place in the queue: a call that missed its slot keeps it."""
    due: float = float("inf")
    """On the limiter's clock: when the call's cluster slot is (``inf``: no cluster). It may
    leave up to :attr:`RateLimiter.late_margin` after that."""


class MissedSlot(Exception):
    """The call reached the wire's gate too late for its cluster slot: nothing was sent; ask
    :meth:`RateLimiter.acquire` again with the permit (it keeps its place in the queue)."""


@dataclass(frozen=True, slots=True)
class Slot:
    """The answer to a conditional reservation (:meth:`TokenBucket.try_reserve`)."""

    granted: bool
    """Whether the slot is the caller's."""
    wait: float
    """Granted: seconds until the slot (>= 0). Not granted: seconds until asking again."""
    at: float | None = None
    """When the bucket decided, on the gate's clock, which is the limiter's (``time.monotonic``
    in production; ``wait`` counts from then): the answer may reach the asking event loop
    later (a busy loop, the SDK threads holding the GIL), and the slot does not wait for it."""


def next_slot(
    next_at: float | None, paused_until: float, now: float, rate: float, burst: float
) -> float:
    """When the next call may go (may lie in the past: the bucket holds tokens).

    ``next_at`` is the moment the bucket's level is back to empty after the calls reserved so
    far (``None``: never used); a bucket idle long enough is full, so its horizon never lies
    more than ``burst - 1`` intervals before ``now`` (or the end of a pause).
    """
    start = max(now, paused_until)
    floor = start - (burst - 1.0) / rate
    return floor if next_at is None else max(next_at, floor)


SLACK = 1e-9
"""A slot due within this many seconds of ``now + lead`` is granted: without it, float rounding
could refuse a caller who waited exactly the ``wait`` it was told (``now + wait + lead`` one ulp
below the horizon), with a ``wait`` of 0 or 1e-16 that sends it straight back."""


@dataclass(slots=True)
class TokenBucket:
    """``rate`` calls per second on average, at most ``burst`` at once. Pure: time is passed in."""

    rate: float
    """Tokens added per second."""
    burst: float = 1.0
    """The bucket's size: calls that may go out back to back after a quiet period."""
    _next: float | None = None
    """The time at which the bucket is empty again if nobody else reserves (the debt horizon)."""
    _paused_until: float = 0.0

    def __post_init__(self) -> None:
        if not self.rate > 0 or not self.burst >= 1:
            raise exceptions.InvalidInput(
                f"rate limit: rate must be > 0 and burst >= 1 (got rate={self.rate}, "
                f"burst={self.burst})"
            )

    def _horizon(self, now: float) -> float:
        return next_slot(self._next, self._paused_until, now, self.rate, self.burst)

    def wait_time(self, now: float) -> float:
        """Seconds from ``now`` until a call could go without waiting (nothing is reserved)."""
        return max(0.0, self._horizon(now) - now)

    def reserve(self, now: float) -> float:
        """Reserve one call; return how many seconds from ``now`` the caller must wait (>= 0).

        Each call adds ``1 / rate`` seconds of debt to the horizon (see :func:`next_slot`).
        """
        horizon = self._horizon(now)
        self._next = horizon + 1.0 / self.rate
        return max(0.0, horizon - now)

    def try_reserve(self, now: float, lead: float = 0.0) -> Slot:
        """Reserve the next slot only if it is due within ``lead`` seconds of ``now``.

        Not granted, nothing changes and the answer says when the slot will be that close:
        a caller never holds a slot far ahead, so one with a longer ``lead`` (a higher
        priority) asking in the meantime gets it first.
        """
        horizon = self._horizon(now)
        early = horizon - lead - now
        if early > SLACK:
            return Slot(False, early)
        self._next = horizon + 1.0 / self.rate
        return Slot(True, max(0.0, horizon - now))

    def pause(self, now: float, seconds: float) -> None:
        """Grant nothing for ``seconds`` from ``now`` (the cloud said: slow down)."""
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        # after a pause calls resume one interval apart: no burst right after being throttled
        self._next = max(self._next if self._next is not None else now, self._paused_until)


class ClusterGate(Protocol):
    """A token bucket per account shared by every host of a cluster (awaited on the loop; an
    implementation doing I/O does it in its own thread)."""

    async def try_reserve(self, account: str, rate: float, burst: float, lead: float) -> Slot:
        """Take the account's next slot if it is due within ``lead`` seconds."""
        ...

    async def pause(self, account: str, seconds: float) -> None:
        """Hold the account's calls back for ``seconds`` on every host."""
        ...


class MemoryClusterGate:
    """A :class:`ClusterGate` in memory: the buckets of hosts that are one process (tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        """Buckets on ``clock``, made on first use."""
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}

    def _bucket(self, account: str, rate: float, burst: float) -> TokenBucket:
        bucket = self._buckets.get(account)
        if bucket is None or (bucket.rate, bucket.burst) != (rate, burst):
            fresh = TokenBucket(rate, burst)
            if bucket is not None:  # as the database's row: the horizon is the account's
                fresh._next, fresh._paused_until = bucket._next, bucket._paused_until
            bucket = self._buckets[account] = fresh
        return bucket

    async def try_reserve(self, account: str, rate: float, burst: float, lead: float) -> Slot:
        """Take the account's next slot if it is due within ``lead`` seconds."""
        now = self._clock()
        slot = self._bucket(account, rate, burst).try_reserve(now, lead)
        return Slot(slot.granted, slot.wait, now)

    async def pause(self, account: str, seconds: float) -> None:
        """Hold the account's calls back for ``seconds``."""
        bucket = self._buckets.get(account)
        if bucket is not None:
            bucket.pause(self._clock(), seconds)
        else:
            self._buckets[account] = TokenBucket(1.0)  # placeholder rate, replaced on first use
            self._buckets[account].pause(self._clock(), seconds)


def _brief(exc: BaseException) -> str:
    """An exception in one short line (a driver's first line: no statement, no URL)."""
    inner = getattr(exc, "orig", None) or exc
    lines = str(inner).strip().splitlines()
    return f"{type(inner).__name__}: {lines[0][:200]}" if lines else type(inner).__name__


class RateLimiter:
    """A thread-safe, loop-agnostic shell around one :class:`TokenBucket`."""

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """A limiter of ``rate`` calls per second with ``burst`` calls back to back."""
        self.bucket = TokenBucket(rate, burst)
        self._gate = TokenBucket(rate, burst)
        """The same limit applied again where the request leaves (see :meth:`wait_sync`)."""
        self._lock = threading.Lock()
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: list[tuple[int, int, asyncio.Future[Permit]]] = []
        self._seq = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self._nap: tuple[int, asyncio.Future[None]] | None = None
        """While the dispatcher waits for a cluster slot of some priority: that priority, and
        a future that a better waiter's arrival completes (it asks again at once)."""
        self.granted = 0
        """Calls granted so far (for statistics and the benchmark)."""
        self.waited = 0.0
        """Seconds callers were told to wait, in total."""
        self.cluster_asks = 0
        """Reservations asked of the cluster's bucket (granted or not; the benchmark)."""
        self.missed = 0
        """Calls that reached the gate too late for their cluster slot and took a new one."""
        self.late_margin = LATE_MARGIN
        """Seconds after its cluster slot that a call may still leave (:data:`LATE_MARGIN`)."""
        self._clusters: list[tuple[str, ClusterGate]] = []
        self._cluster_pause = 0.0

    @property
    def rate(self) -> float:
        """Calls per second on average."""
        return self.bucket.rate

    def reserve(self) -> float:
        """Reserve one call now; the seconds to wait before making it."""
        with self._lock:
            delay = self.bucket.reserve(self._clock())
            self.granted += 1
            self.waited += delay
        return delay

    async def acquire(self, priority: int = 0, again: Permit | None = None) -> Permit:
        """Wait on the running event loop until one call may be made; the call's permit.

        Waiters are served by ``priority`` (lower first), then in arrival order, one token at a
        time: a describe that polls VMs (priority 0) is not queued behind a storm of creates
        (priority 1) that arrived before it. A waiter cancelled before its turn takes no token.
        Shared with a cluster (:meth:`share`), each token is also a slot of the cluster's
        bucket, taken here on the loop; if the cluster's bucket cannot be reached, every
        waiter gets a ``BackendError``. ``again``: the permit of a call that missed its slot
        (:class:`MissedSlot`), asking for a new one in the place it had in the queue.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old queue died with its loop
            self._loop, self._waiters, self._dispatcher, self._nap = loop, [], None, None
        if again is not None:
            priority, seq = again.priority, again.seq
        else:
            self._seq += 1
            seq = self._seq
        if not self._waiters and not self._clusters:
            with self._lock:
                if self.bucket.wait_time(self._clock()) == 0:
                    self.bucket.reserve(self._clock())
                    self.granted += 1
                    return Permit(priority, seq)
        future: asyncio.Future[Permit] = loop.create_future()
        heapq.heappush(self._waiters, (priority, seq, future))
        if self._nap is not None and priority < self._nap[0] and not self._nap[1].done():
            self._nap[1].set_result(None)  # ask the cluster again, with this waiter's lead
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch())
        return await future

    def _best(self) -> tuple[int, int, asyncio.Future[Permit]] | None:
        """The best waiter still waiting (cancelled ones are dropped)."""
        while self._waiters and self._waiters[0][2].done():
            heapq.heappop(self._waiters)
        return self._waiters[0] if self._waiters else None

    async def _dispatch(self) -> None:
        """Hand out tokens to the queued waiters, best first, as the bucket(s) allow."""
        while (best := self._best()) is not None:
            with self._lock:
                wait = self.bucket.wait_time(self._clock())
                cluster = self._clusters[-1] if self._clusters else None
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            due = float("inf")
            if cluster is not None:
                slot_at = await self._cluster_slot(cluster, best[0])
                if slot_at is None:
                    continue
                due = slot_at
            best = self._best()
            if best is None:  # every waiter left while the slot was taken: it goes unused
                break
            heapq.heappop(self._waiters)
            with self._lock:
                self.bucket.reserve(self._clock())
                self.granted += 1
            best[2].set_result(Permit(best[0], best[1], due))

    async def _cluster_slot(self, cluster: tuple[str, ClusterGate], priority: int) -> float | None:
        """Take the cluster's next slot for a waiter of ``priority`` and wait for it (its time
        on the limiter's clock), or wait until it is worth asking again (``None``)."""
        account, gate = cluster
        with self._lock:
            pause, self._cluster_pause = self._cluster_pause, 0.0
        try:
            if pause > 0:
                await gate.pause(account, pause)
            self.cluster_asks += 1
            rate, burst = self.bucket.rate, self.cluster_burst()
            slot = await gate.try_reserve(account, rate, burst, lead(priority))
        except Exception as exc:  # every waiter is told, none hangs
            error = exceptions.BackendError(
                f"rate limit of cloud account {account!r}: the cluster's bucket could not be "
                f"reached ({_brief(exc)})"
            )
            for _, _, future in self._waiters:
                if not future.done():
                    future.set_exception(error)
            self._waiters = []
            return None
        if slot.granted:
            # from when the gate had the answer, not from when this loop got round to it
            due = (slot.at if slot.at is not None else self._clock()) + slot.wait
            if (wait := due - self._clock()) > 0:
                await asyncio.sleep(wait)
            return due
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._nap = (priority, wake)
        sleeper = asyncio.ensure_future(asyncio.sleep(slot.wait))
        try:
            await asyncio.wait([sleeper, wake], return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            self._nap = None
        return None

    def cluster_burst(self) -> float:
        """The burst asked of the cluster's bucket: ``burst`` less ``rate * late_margin`` (at
        least 1). Calls leave up to :attr:`late_margin` after their slots; a burst of slots
        right after calls that left that late would otherwise put up to ``rate * late_margin``
        calls more than the limit in one window at the wire."""
        bucket = self.bucket
        if not self.late_margin < float("inf"):
            return bucket.burst
        return max(1.0, bucket.burst - bucket.rate * self.late_margin)

    def check_slot(self, permit: Permit) -> None:
        """Raise :class:`MissedSlot` if the call of ``permit`` is later than :attr:`late_margin`
        after its cluster slot (the SDK's last step before the request leaves calls it)."""
        late = self._clock() - permit.due
        if late > self.late_margin:
            with self._lock:
                self.missed += 1
            raise MissedSlot(f"{late:.3f} s after its slot")

    def wait_sync(self, permit: Permit | None = None) -> None:
        """In the SDK's worker thread, right before the request: pass the *gate*, a second bucket
        of the same rate. Admission (:meth:`acquire`, on the loop, holding no thread) spaces the
        calls; a thread that starts its call late (a busy interpreter) could still send two of
        them closer than the limit allows. The gate re-spaces them at the wire; since both
        buckets have the same rate, it only ever waits for such a late pair, and throughput
        stays ``rate``. (The cluster's slot was taken in :meth:`acquire`: no database here.)

        The gate sees only this host's calls. With a cluster slot (``permit``'s deadline), a
        call that would leave more than :attr:`late_margin` after its slot raises
        :class:`MissedSlot` instead (nothing is reserved): the other hosts' calls of the next
        slots are on the wire by then, and going late it would make a burst with them."""
        with self._lock:
            now = self._clock()
            late = now + self._gate.wait_time(now) - (permit.due if permit else float("inf"))
            if late > self.late_margin:
                self.missed += 1
                raise MissedSlot(f"{late:.3f} s after its slot")
            delay = self._gate.reserve(now)
        if delay > 0:
            time.sleep(delay)

    def share(self, account: str, gate: ClusterGate) -> None:
        """From now on, also take each token's slot from ``gate`` (the cluster's bucket of
        ``account``) in :meth:`acquire`; the gate shared last is used."""
        with self._lock:
            self._clusters.append((account, gate))

    def unshare(self, gate: ClusterGate) -> None:
        """Stop using ``gate`` (its backend is closing)."""
        with self._lock:
            self._clusters = [(a, g) for a, g in self._clusters if g is not gate]

    def pause(self, seconds: float) -> None:
        """Hold every caller of this account back for ``seconds`` (after a throttling answer)."""
        with self._lock:
            self.bucket.pause(self._clock(), seconds)
            self._gate.pause(self._clock(), seconds)
            if self._clusters:  # told to the cluster before the next slot is taken (no I/O here)
                self._cluster_pause = max(self._cluster_pause, seconds)


_LIMITERS: dict[str, RateLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(key: str, rate: float, burst: float = 1.0) -> RateLimiter:
    """The process-wide limiter of the account ``key``, created on first use.

    Every pool naming the same account key shares the returned object. Two pools declaring
    different rates for one account is a configuration error: the first one would silently win.
    """
    with _LIMITERS_LOCK:
        limiter = _LIMITERS.get(key)
        if limiter is None:
            limiter = _LIMITERS[key] = RateLimiter(rate, burst)
        elif limiter.rate != rate or limiter.bucket.burst != burst:
            raise exceptions.ConfigError(
                f"rate limit of cloud account {key!r} is already {limiter.rate:g}/s "
                f"(burst {limiter.bucket.burst:g}); another pool asks for {rate:g}/s "
                f"(burst {burst:g}): give every pool on one account the same rate"
            )
        return limiter


def forget_limiters() -> None:
    """Drop every shared limiter (tests, and a controller reloading its configuration)."""
    with _LIMITERS_LOCK:
        _LIMITERS.clear()
