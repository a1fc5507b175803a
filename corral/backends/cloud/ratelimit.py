"""A per-account rate limit on cloud API calls (Nodepool's ``rate``), shared by every pool.

:class:`TokenBucket` is the pure core: no clock, no lock, no asyncio; the caller passes ``now``.
It works by *reservation*: each call reserves the next free slot and is told how long to wait
for it, so callers are served in arrival order and the bucket never has to wake anybody up.
Over any window of ``w`` seconds at most ``burst + rate * w`` calls are granted.

:class:`RateLimiter` is the shell: a lock (the bucket is shared by event loops and SDK threads)
and a monotonic clock; :meth:`RateLimiter.acquire` queues the caller by priority on the running
loop and hands out one token at a time,
:meth:`RateLimiter.wait_sync` sleeps in a worker thread (the cloud backends take their token in
the thread, right before the request, so the limit holds at the wire).
:func:`limiter_for` keeps one limiter per account key in this process, so two pools on one account
share one bucket. Across several hosts the limit is per process: a cluster-wide bucket needs the
shared PostgreSQL coordination of issue 11, which does not exist yet (see docs/cloud.md).
"""

from __future__ import annotations

import asyncio
import heapq
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from corral import exceptions


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

    def wait_time(self, now: float) -> float:
        """Seconds from ``now`` until a call could go without waiting (nothing is reserved)."""
        interval = 1.0 / self.rate
        start = max(now, self._paused_until)
        floor = start - (self.burst - 1.0) * interval
        horizon = floor if self._next is None else max(self._next, floor)
        return max(0.0, horizon - now)

    def reserve(self, now: float) -> float:
        """Reserve one call; return how many seconds from ``now`` the caller must wait (>= 0).

        The bucket is modelled by ``_next``, the moment its level would be back to empty after
        the calls reserved so far: a bucket that was idle long enough is full (``burst`` calls go
        at once), each call adds ``1 / rate`` seconds of debt.
        """
        interval = 1.0 / self.rate
        start = max(now, self._paused_until)
        # a full bucket holds `burst` tokens: its empty-horizon lies (burst - 1) intervals back
        floor = start - (self.burst - 1.0) * interval
        horizon = floor if self._next is None else max(self._next, floor)
        self._next = horizon + interval
        return max(0.0, horizon - now)

    def pause(self, now: float, seconds: float) -> None:
        """Grant nothing for ``seconds`` from ``now`` (the cloud said: slow down)."""
        self._paused_until = max(self._paused_until, now + max(0.0, seconds))
        # after a pause calls resume one interval apart: no burst right after being throttled
        self._next = max(self._next if self._next is not None else now, self._paused_until)


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
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._dispatcher: asyncio.Task[None] | None = None
        self.granted = 0
        """Calls granted so far (for statistics and the benchmark)."""
        self.waited = 0.0
        """Seconds callers were told to wait, in total."""

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

    async def acquire(self, priority: int = 0) -> None:
        """Wait on the running event loop until one call may be made.

        Waiters are served by ``priority`` (lower first), then in arrival order, one token at a
        time: a describe that polls VMs (priority 0) is not queued behind a storm of creates
        (priority 1) that arrived before it. A waiter cancelled before its turn takes no token.
        """
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (tests): the old queue died with its loop
            self._loop, self._waiters, self._dispatcher = loop, [], None
        if not self._waiters:
            with self._lock:
                if self.bucket.wait_time(self._clock()) == 0:
                    self.bucket.reserve(self._clock())
                    self.granted += 1
                    return
        future: asyncio.Future[None] = loop.create_future()
        self._seq += 1
        heapq.heappush(self._waiters, (priority, self._seq, future))
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = loop.create_task(self._dispatch())
        await future

    async def _dispatch(self) -> None:
        """Hand out tokens to the queued waiters, best first, as the bucket allows."""
        while self._waiters:
            with self._lock:
                wait = self.bucket.wait_time(self._clock())
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            _, _, future = heapq.heappop(self._waiters)
            if future.done():  # cancelled while waiting: no token taken
                continue
            with self._lock:
                self.bucket.reserve(self._clock())
                self.granted += 1
            future.set_result(None)

    def wait_sync(self) -> None:
        """In the SDK's worker thread, right before the request: pass the *gate*, a second bucket
        of the same rate. Admission (:meth:`acquire`, on the loop, holding no thread) spaces the
        calls; a thread that starts its call late (a busy interpreter) could still send two of
        them closer than the limit allows. The gate re-spaces them at the wire; since both
        buckets have the same rate, it only ever waits for such a late pair, and throughput
        stays ``rate``."""
        with self._lock:
            delay = self._gate.reserve(self._clock())
        if delay > 0:
            time.sleep(delay)

    def pause(self, seconds: float) -> None:
        """Hold every caller of this account back for ``seconds`` (after a throttling answer)."""
        with self._lock:
            self.bucket.pause(self._clock(), seconds)
            self._gate.pause(self._clock(), seconds)


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
