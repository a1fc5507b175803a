"""The per-account token bucket: the pure core exhaustively, the shell's sharing.

Breakages caught: a bucket granting more than ``burst + rate * w`` calls in some window ``w``
(the limit exceeded), callers served out of order, a pause that does not hold everyone back,
two pools on one account getting two buckets.
"""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral import exceptions
from corral.backends.cloud import ratelimit
from corral.backends.cloud.ratelimit import RateLimiter, TokenBucket, limiter_for


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
