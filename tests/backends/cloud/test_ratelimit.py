"""The per-account token bucket: the pure core exhaustively, the shell's sharing.

Breakages caught: a bucket granting more than ``burst + rate * w`` calls in some window ``w``
(the limit exceeded), callers served out of order, a pause that does not hold everyone back,
two pools on one account getting two buckets.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from corral import exceptions
from corral.backends.cloud import ratelimit
from corral.backends.cloud.ratelimit import (
    MemoryClusterGate,
    MissedSlot,
    Permit,
    RateLimiter,
    Slot,
    TokenBucket,
    limiter_for,
)

T = TypeVar("T")


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.5, 200),
    burst=st.integers(1, 20),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=80),
)
def test_no_window_ever_gets_more_than_burst_plus_rate_times_its_length(
    rate: float, burst: int, gaps: list[float]
) -> None:
    bucket = TokenBucket(rate, burst)
    now, grants = 0.0, []
    for gap in gaps:
        now += gap
        grants.append(now + bucket.reserve(now))
    assert grants == sorted(grants)  # first come, first served
    eps = 1e-9
    for i, start in enumerate(grants):
        for j in range(i, len(grants)):
            window = grants[j] - start
            assert j - i + 1 <= burst + rate * window + eps


def test_an_idle_bucket_grants_its_burst_at_once_then_one_per_interval() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    delays = [bucket.reserve(100.0) for _ in range(6)]
    assert delays[:3] == [0, 0, 0]
    assert delays[3:] == pytest.approx([0.1, 0.2, 0.3])


def test_the_limit_is_reached_not_just_respected() -> None:
    """Breakage caught: a bucket so cautious that 100 calls take far longer than 100 / rate."""
    bucket = TokenBucket(rate=10, burst=1)
    last = max(bucket.reserve(0.0) for _ in range(100))
    assert last == pytest.approx(9.9)


def test_pause_holds_back_every_caller() -> None:
    bucket = TokenBucket(rate=100, burst=5)
    bucket.pause(0.0, 2.0)
    assert bucket.reserve(0.5) >= 1.5
    assert bucket.reserve(0.5) >= 1.5 + 0.01 - 1e-9


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (1, 0.5)])
def test_bad_rates_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(exceptions.InvalidInput, match="rate"):
        TokenBucket(rate, burst)


def test_one_limiter_per_account_shared_by_every_pool() -> None:
    ratelimit.forget_limiters()
    a = limiter_for("ec2:acct", 10, 2)
    assert limiter_for("ec2:acct", 10, 2) is a
    assert limiter_for("ec2:other", 10, 2) is not a
    with pytest.raises(exceptions.ConfigError, match="same rate"):
        limiter_for("ec2:acct", 20, 2)
    ratelimit.forget_limiters()


class _ManualTime:
    """A manual clock whose asyncio.sleep advances it (no real waiting in the test)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 50.0
        self.slept: list[float] = []
        real_sleep = asyncio.sleep

        async def fake_sleep(seconds: float) -> None:
            self.slept.append(seconds)
            self.now += seconds
            await real_sleep(0)

        monkeypatch.setattr(ratelimit.asyncio, "sleep", fake_sleep)


async def test_async_shell_spaces_the_callers(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _ManualTime(monkeypatch)
    limiter = RateLimiter(rate=4, burst=1, clock=lambda: t.now)
    await asyncio.gather(*(limiter.acquire() for _ in range(3)))
    assert t.slept == pytest.approx([0.25, 0.25])  # the first at once, then one per interval
    assert limiter.granted == 3


async def test_describes_go_before_queued_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Breakage caught: a poll's describe queued behind a storm of creates (VMs that are up are
    noticed only after every create went out)."""
    t = _ManualTime(monkeypatch)
    limiter = RateLimiter(rate=10, burst=1, clock=lambda: t.now)
    order: list[str] = []

    async def call(what: str, priority: int) -> None:
        await limiter.acquire(priority)
        order.append(what)

    creates = [asyncio.ensure_future(call(f"create-{i}", 1)) for i in range(5)]
    await asyncio.sleep(0)
    describe = asyncio.ensure_future(call("describe", 0))
    await asyncio.gather(*creates, describe)
    assert order.index("describe") <= 1  # only a create already granted may precede it


async def test_a_cancelled_waiter_takes_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    t = _ManualTime(monkeypatch)
    limiter = RateLimiter(rate=1, burst=1, clock=lambda: t.now)
    await limiter.acquire()
    quitter = asyncio.ensure_future(limiter.acquire())
    stayer = asyncio.ensure_future(limiter.acquire())
    await asyncio.sleep(0)
    quitter.cancel()
    await stayer
    assert limiter.granted == 2


def test_the_gate_respaces_calls_that_start_late(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two calls admitted 0.25 s apart whose threads start together are sent 0.25 s apart.
    Breakage caught: a limit that holds on average but lets a late pair hit the API at once."""
    now = [10.0]
    slept: list[float] = []
    monkeypatch.setattr(ratelimit.time, "sleep", lambda s: slept.append(s))
    limiter = RateLimiter(rate=4, burst=1, clock=lambda: now[0])
    assert [limiter.reserve(), limiter.reserve()] == pytest.approx([0.0, 0.25])
    now[0] = 10.25  # both threads start only now
    limiter.wait_sync()
    limiter.wait_sync()
    assert slept == pytest.approx([0.25])


class _VirtualTime:
    """Virtual time for the limiter: ``asyncio.sleep`` parks the caller until the driver moves
    the clock to its wake-up time, once every task has run as far as it can (deterministic)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = 100.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._real_sleep = asyncio.sleep
        monkeypatch.setattr(ratelimit.asyncio, "sleep", self._sleep)

    async def _sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await self._real_sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self.now + seconds, self._seq, future))
        await future

    async def run(self, main: Awaitable[T]) -> T:
        """Run ``main`` to its end, moving the clock from one wake-up to the next."""
        task = asyncio.ensure_future(main)
        while not task.done():
            for _ in range(50):
                await self._real_sleep(0)
            while self._sleepers and self._sleepers[0][2].done():  # cancelled naps
                heapq.heappop(self._sleepers)
            if task.done():
                break
            assert self._sleepers, "every task waits and nobody sleeps: a hang"
            at, _, future = heapq.heappop(self._sleepers)
            self.now = max(self.now, at)
            future.set_result(None)
        return task.result()


async def test_priority_holds_across_hosts_sharing_one_bucket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hosts (two limiters) share the account's bucket (10/s, burst 1). Each queues ten
    creates at once; 0.55 s later host B queues a describe and host A a terminate. Both go out
    in the next two slots, before any create still waiting on either host; the hosts together
    get one slot per 0.1 s, no more and no fewer.

    Breakages caught: a limiter that does not take its slots from the shared bucket (20 calls/s
    for the two hosts), a priority that holds only inside a host (lead 0 for describes: host
    A's creates win every slot and the describe of host B waits for all of them), a host that
    reserves slots ahead of time (the describe queued behind its reservations)."""
    vt = _VirtualTime(monkeypatch)
    shared = MemoryClusterGate(clock=lambda: vt.now)
    hosts = {h: RateLimiter(10, 1, clock=lambda: vt.now) for h in "AB"}
    for limiter in hosts.values():
        limiter.share("acct", shared)
    went: list[tuple[float, str]] = []

    async def call(host: str, what: str, priority: int) -> None:
        await hosts[host].acquire(priority)
        went.append((vt.now, f"{host}:{what}"))

    async def scenario() -> None:
        creates = [call(h, f"create-{i}", 1) for i in range(10) for h in "AB"]
        start = vt.now
        tasks = [asyncio.ensure_future(c) for c in creates]
        await asyncio.sleep(0.55)
        assert vt.now == pytest.approx(start + 0.55)
        await asyncio.gather(*tasks, call("B", "describe", 0), call("A", "terminate", 0))

    await vt.run(scenario())
    names = [name for _, name in went]
    times = [t for t, _ in went]
    assert len(names) == 22
    assert set(names[6:8]) == {"B:describe", "A:terminate"}, names  # 6 slots by 0.55 s
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.1) and max(gaps) == pytest.approx(0.1)


async def test_a_gate_that_fails_fails_every_waiter(monkeypatch: pytest.MonkeyPatch) -> None:
    """Breakage caught: a dispatcher that dies on the gate's error and leaves its waiters
    waiting forever (the host stalls: loop idle, no call sent)."""

    class Broken(MemoryClusterGate):
        async def try_reserve(self, account: str, rate: float, burst: float, lead: float) -> Slot:
            raise OSError("connection refused\nsecond line with details")

    limiter = RateLimiter(10, 1)
    limiter.share("acct", Broken())
    results = await asyncio.wait_for(
        asyncio.gather(*(limiter.acquire(i % 2) for i in range(3)), return_exceptions=True), 10
    )
    assert all(isinstance(r, exceptions.BackendError) for r in results)
    assert str(results[0]) == (
        "rate limit of cloud account 'acct': the cluster's bucket could not be reached "
        "(OSError: connection refused)"
    )


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(0.5, 100),
    burst=st.integers(1, 10),
    asks=st.lists(st.tuples(st.floats(0, 0.5), st.sampled_from([0.0, 0.2])), max_size=60),
)
# float rounding: the retry at now + wait had now + wait + lead one ulp below the horizon
@example(rate=1.5, burst=3, asks=[(0.3, 0.0), (0.2, 0.2), (0.2, 0.0), (0.0, 0.2)])
def test_conditional_reservations_keep_the_limit_and_take_nothing_when_refused(
    rate: float, burst: int, asks: list[tuple[float, float]]
) -> None:
    """Callers with and without a lead ask at random moments: the granted slots never put
    more than burst + rate * w in a window, and a refusal changes nothing."""
    bucket = TokenBucket(rate, burst)
    now, slots = 0.0, []
    for gap, lead_s in asks:
        now += gap
        before = (bucket._next, bucket._paused_until)
        slot = bucket.try_reserve(now, lead_s)
        if slot.granted:
            assert slot.wait <= lead_s + 1e-9
            slots.append(now + slot.wait)
        else:
            assert (bucket._next, bucket._paused_until) == before
            assert slot.wait > 0
            assert bucket.try_reserve(now + slot.wait, lead_s).granted is True
            bucket._next, bucket._paused_until = before  # undo the probe
    slots.sort()
    for i, start in enumerate(slots):
        for j in range(i, len(slots)):
            assert j - i + 1 <= burst + rate * (slots[j] - start) + 1e-6


def test_a_call_too_late_for_its_slot_misses_it_and_reserves_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Breakages caught: a late call sent anyway on its old slot; a missed call that still takes
    a token of the host's gate (its next, punctual call would be delayed past its own slot)."""
    now = [10.0]
    monkeypatch.setattr(ratelimit.time, "sleep", lambda s: pytest.fail(f"slept {s}"))
    limiter = RateLimiter(rate=10, burst=1, clock=lambda: now[0])
    limiter.late_margin = 0.05
    limiter.wait_sync(Permit(1, 1, due=now[0] - 0.04))  # late, within the margin: it goes
    now[0] += 0.1
    with pytest.raises(MissedSlot):
        limiter.wait_sync(Permit(1, 2, due=now[0] - 0.06))
    assert limiter.missed == 1
    limiter.wait_sync(Permit(1, 3, due=now[0]))  # punctual: the gate has its token, no sleep
    now[0] += 0.1
    limiter.wait_sync(Permit(1, 4))  # no cluster slot (one host): never a miss


async def test_a_call_that_starts_late_takes_a_new_slot_so_the_cluster_limit_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two hosts share the account's bucket (10/s, burst 1) and send 6 creates each, as the
    backends do: the slot on the loop, then the gate in the worker thread. Two of host A's
    threads start 0.35 s after their slot (a busy interpreter). At the wire (when ``wait_sync``
    lets the call go) no window of w seconds holds more than 1 + 10 w calls, and every call
    goes once.

    Breakage caught: a late call sent on its old slot (``late_margin`` infinite: the code before
    this test): it leaves between host B's calls of the next slots, 0.05 s from one of them, and
    no host's own gate sees the other's calls."""
    vt = _VirtualTime(monkeypatch)
    monkeypatch.setattr(ratelimit.time, "sleep", lambda s: setattr(vt, "now", vt.now + s))
    shared = MemoryClusterGate(clock=lambda: vt.now)
    hosts = {h: RateLimiter(10, 1, clock=lambda: vt.now) for h in "AB"}
    for limiter in hosts.values():
        limiter.share("acct", shared)
    sent: list[tuple[float, str]] = []
    late_threads = {"A:1", "A:3"}

    async def create(host: str, i: int) -> None:
        name = f"{host}:{i}"
        permit = await hosts[host].acquire(1)
        while True:
            if name in late_threads:
                late_threads.discard(name)  # its thread starts late once
                await asyncio.sleep(0.35)
            try:
                hosts[host].wait_sync(permit)
            except MissedSlot:
                permit = await hosts[host].acquire(again=permit)
                continue
            sent.append((vt.now, name))
            return

    await vt.run(asyncio.gather(*(create(h, i) for i in range(6) for h in "AB")))
    assert sorted(name for _, name in sent) == sorted(f"{h}:{i}" for i in range(6) for h in "AB")
    times = sorted(t for t, _ in sent)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            assert j - i + 1 <= 1 + 10 * (times[j] - start) + 1e-9, sorted(sent)
    assert hosts["A"].missed == 2


async def test_a_slot_counts_from_the_buckets_decision_not_from_when_the_loop_hears_of_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cluster's bucket grants a slot due at once, and its answer reaches the host's event
    loop 0.15 s later (a busy loop). The call is 0.15 s late for its slot: it misses it (margin
    0.1 s). Breakage caught: the slot's time taken when the loop got the answer (the call goes
    0.15 s late, after the calls other hosts made on the next slots: +0.58 calls at the wire
    in a 200-VM bench run)."""
    vt = _VirtualTime(monkeypatch)

    class SlowAnswers(MemoryClusterGate):
        async def try_reserve(self, account: str, rate: float, burst: float, lead: float) -> Slot:
            slot = await super().try_reserve(account, rate, burst, lead)
            await asyncio.sleep(0.15)
            return slot

    limiter = RateLimiter(10, 1, clock=lambda: vt.now)
    limiter.share("acct", SlowAnswers(clock=lambda: vt.now))

    async def scenario() -> Permit:
        return await limiter.acquire(1)

    start = vt.now
    permit = await vt.run(scenario())
    assert permit.due == pytest.approx(start)
    with pytest.raises(MissedSlot):
        limiter.wait_sync(permit)
