"""The coalescing runner (no lost wake-up, no pile-up) and the event bus (order, overflow)."""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.controller.events import Event, EventBus
from corral.controller.runner import Coalescer


async def test_kicks_during_a_run_cause_exactly_one_more_run() -> None:
    runs: list[list[str]] = []
    gate = asyncio.Event()

    async def work(keys: list[str]) -> None:
        runs.append(keys)
        if len(runs) == 1:
            await gate.wait()

    runner: Coalescer[str] = Coalescer("test", work)
    runner.kick("a")
    await asyncio.sleep(0)
    assert runs == [["a"]] and not runner.idle
    for key in ("b", "c", "b"):
        runner.kick(key)  # while the first run is in flight
    gate.set()
    while not runner.idle:
        await asyncio.sleep(0)
    assert runs == [["a"], ["b", "c"]]
    await runner.close()
    runner.kick("d")  # ignored after close
    assert runs == [["a"], ["b", "c"]]


async def test_a_failing_run_reports_and_the_runner_survives() -> None:
    failed: list[list[int]] = []
    calls = 0

    async def work(keys: list[int]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise exceptions.StoreError("down")
        if calls == 2:
            raise RuntimeError("a bug")

    runner: Coalescer[int] = Coalescer("test", work, on_error=failed.append)
    for key in (1, 2, 3):
        runner.kick(key)
        while not runner.idle:
            await asyncio.sleep(0)
    assert calls == 3 and failed == [[1], [2]]


async def test_event_bus_order_kinds_and_overflow() -> None:
    bus = EventBus()
    with pytest.raises(exceptions.InvalidInput):
        bus.subscribe(kinds=["nope"])
    async with bus.subscribe(kinds=["ticket"]) as tickets, bus.subscribe(maxsize=3) as small:
        assert bus.subscribers == 2
        for i in range(5):
            bus.publish(Event("ticket", f"t{i}", "waiting", float(i)))
        bus.publish(Event("vm", "v", "ready", 9.0))
        assert [(await tickets.get(timeout=1)).id for _ in range(5)] == [f"t{i}" for i in range(5)]
        got = [await small.get(timeout=1) for _ in range(3)]
        assert got[-1].id == "v"  # newest kept
        assert any(e.kind == "overflow" for e in got) and small.dropped > 0
        assert got[-1].to_json()["state"] == "ready"
    assert bus.subscribers == 0
