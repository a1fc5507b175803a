"""The coalescer behind batched describes and terminates.

Breakages caught: concurrent callers each making their own call, a caller answered by a round
that started before it asked (a stale poll), an error reaching only some callers, one cancelled
caller cancelling everybody's round, a batch above the API's maximum.
"""

from __future__ import annotations

import asyncio

import pytest

from corral.backends.cloud.batching import Coalescer


async def test_concurrent_callers_share_one_round() -> None:
    seen: list[frozenset[int]] = []

    async def call(items: frozenset[int]) -> int:
        seen.append(items)
        return len(items)

    c: Coalescer[int, int] = Coalescer(call)
    results = await asyncio.gather(*(c.submit(i) for i in range(10)))
    assert results == [10] * 10 and seen == [frozenset(range(10))] and c.rounds == 1


async def test_a_caller_arriving_during_a_round_gets_the_next_one() -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def call(items: frozenset[str]) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await release.wait()
        return calls

    c: Coalescer[str, int] = Coalescer(call)
    first = asyncio.ensure_future(c.submit("a"))
    await started.wait()
    second = asyncio.ensure_future(c.submit("b"))
    await asyncio.sleep(0)
    release.set()
    assert await first == 1
    assert await second == 2  # not the answer of the round that was already running


async def test_errors_reach_every_caller_of_the_round() -> None:
    async def call(items: frozenset[int]) -> None:
        raise RuntimeError("boom")

    c: Coalescer[int, None] = Coalescer(call)
    results = await asyncio.gather(*(c.submit(i) for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    await c.aclose()


async def test_a_cancelled_caller_does_not_cancel_the_round() -> None:
    gate = asyncio.Event()

    async def call(items: frozenset[int]) -> frozenset[int]:
        await gate.wait()
        return items

    c: Coalescer[int, frozenset[int]] = Coalescer(call)
    quitter = asyncio.ensure_future(c.submit(1))
    stayer = asyncio.ensure_future(c.submit(2))
    await asyncio.sleep(0.01)
    quitter.cancel()
    gate.set()
    assert await stayer == frozenset({1, 2})
    with pytest.raises(asyncio.CancelledError):
        await quitter


async def test_max_items_splits_rounds() -> None:
    sizes: list[int] = []

    async def call(items: frozenset[int]) -> None:
        sizes.append(len(items))

    c: Coalescer[int, None] = Coalescer(call, max_items=4)
    await asyncio.gather(*(c.submit(i) for i in range(10)))
    assert sorted(sizes) == [2, 4, 4]


async def test_rounds_are_spaced_by_min_interval() -> None:
    now = [0.0]
    starts: list[float] = []
    slept: list[float] = []

    async def call(items: frozenset[int]) -> None:
        starts.append(now[0])

    c: Coalescer[int, None] = Coalescer(call, min_interval=2.0, clock=lambda: now[0])
    await c.submit(1)
    now[0] = 0.5
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds
        await real_sleep(0)

    mp = pytest.MonkeyPatch()
    mp.setattr("corral.backends.cloud.batching.asyncio.sleep", fake_sleep)
    try:
        await c.submit(2)
    finally:
        mp.undo()
    assert slept == [1.5] and starts == [0.0, 2.0]
