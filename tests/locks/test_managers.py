"""Scenarios run against both shells (asyncio ``LockManager`` and ``ThreadLockManager``)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import exceptions
from corral.locks import Mode

from .conftest import Driver, eventually, queued


async def test_exclusive_excludes_and_release_wakes_next(driver: Driver) -> None:
    a = await driver.acquire("vm/a", owner="a")
    waiting = driver.start("vm/a", owner="b")
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    assert not waiting.done()
    a.release()
    b = await asyncio.wait_for(waiting, 5)
    assert b.owner == "b" and b.token("vm/a") == 2
    b.release()
    assert driver.locks.status() == []


async def test_shared_coexists(driver: Driver) -> None:
    helds = [await driver.acquire("vm/a", mode="shared", owner=f"r{i}") for i in range(3)]
    (status,) = driver.locks.status()
    assert status.mode is Mode.SHARED and len(status.holders) == 3
    for h in helds:
        h.release()


async def test_waiting_exclusive_blocks_later_shared(driver: Driver) -> None:
    r1 = await driver.acquire("vm/a", mode="shared", owner="r1")
    writer = driver.start("vm/a", owner="w")
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    reader = driver.start("vm/a", mode="shared", owner="r2")
    await eventually(lambda: queued(driver.locks, "vm/a") == 2)
    r1.release()
    w = await asyncio.wait_for(writer, 5)
    assert not reader.done()
    w.release()
    (await asyncio.wait_for(reader, 5)).release()


async def test_timeout_of_queued_exclusive_lets_shared_behind_it_in(driver: Driver) -> None:
    r1 = await driver.acquire("vm/a", mode="shared", owner="r1")
    writer = driver.start("vm/a", owner="w", timeout=0.2)
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    readers = [driver.start("vm/a", mode="shared", owner=f"r{i}") for i in (2, 3)]
    await eventually(lambda: queued(driver.locks, "vm/a") == 3)
    with pytest.raises(exceptions.LockTimeout):
        await asyncio.wait_for(writer, 5)
    helds = [await asyncio.wait_for(r, 5) for r in readers]
    (status,) = driver.locks.status()
    assert {h.owner for h in status.holders} == {"r1", "r2", "r3"} and status.queue == ()
    for h in [r1, *helds]:
        h.release()


async def test_sub_second_timeout_is_not_truncated(driver: Driver) -> None:
    a = await driver.acquire("vm/a", owner="a")
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(exceptions.LockTimeout):
        await driver.acquire("vm/a", owner="b", timeout=0.3)
    assert loop.time() - started >= 0.25
    a.release()


async def test_arrival_order_shared_exclusive_shared(driver: Driver) -> None:
    first = await driver.acquire("vm/a", owner="first")
    order: list[str] = []
    starts = []
    for owner, mode in [("s1", "shared"), ("x", "exclusive"), ("s2", "shared")]:
        starts.append((owner, driver.start("vm/a", mode=mode, owner=owner)))
        n = len(starts)
        await eventually(lambda: queued(driver.locks, "vm/a") == n)  # noqa: B023
    first.release()
    for owner, fut in starts:
        held = await asyncio.wait_for(fut, 5)
        order.append(owner)
        held.release()
    assert order == ["s1", "x", "s2"]


async def test_already_held_is_an_error_not_a_deadlock(driver: Driver) -> None:
    a = await driver.acquire("vm/a", owner="t")
    with pytest.raises(exceptions.AlreadyHeld):
        await driver.acquire("vm/a", owner="t", timeout=1.0)
    with pytest.raises(exceptions.AlreadyHeld):
        await driver.acquire("vm/b", "vm/a", owner="t")
    a.release()


async def test_multi_acquire_all_or_nothing_on_timeout(driver: Driver) -> None:
    blocker = await driver.acquire("vm/b", owner="blocker")
    with pytest.raises(exceptions.LockTimeout):
        await driver.acquire("vm/c", "vm/a", "vm/b", owner="m", timeout=0.1)
    assert [s.key for s in driver.locks.status()] == ["vm/b"]
    other = await driver.acquire("vm/a", owner="o", timeout=1.0)
    other.release()
    blocker.release()


async def test_multi_acquire_dedupes_sorts_and_rejects_two_modes(driver: Driver) -> None:
    held = await driver.acquire("vm/b", "vm/a", "vm/b", ("vm/c", "shared"), owner="m")
    assert held.keys == ("vm/a", "vm/b", "vm/c")
    assert held.mode("vm/c") is Mode.SHARED and held.mode("vm/a") is Mode.EXCLUSIVE
    held.release()
    with pytest.raises(exceptions.InvalidInput, match="two modes"):
        driver.locks.acquire("vm/a", ("vm/a", "shared"), owner="m")
    held = await driver.acquire({"vm/x": "shared", "vm/y": "exclusive"}, owner="m")
    assert held.mode("vm/x") is Mode.SHARED
    held.release()


async def test_upgrade_when_sole_holder_and_conflict_for_second(driver: Driver) -> None:
    a = await driver.acquire("vm/a", mode="shared", owner="a")
    token = a.token("vm/a")
    await driver.upgrade(a, timeout=1.0)
    assert a.exclusive and a.token("vm/a") > token
    a.downgrade()
    assert not a.exclusive
    b = await driver.acquire("vm/a", mode="shared", owner="b")
    pending = driver.start_upgrade(a, timeout=5.0)
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    with pytest.raises(exceptions.UpgradeConflict):
        await driver.upgrade(b, timeout=1.0)
    b.release()
    await asyncio.wait_for(pending, 5)
    assert a.mode("vm/a") is Mode.EXCLUSIVE
    a.release()


async def test_upgrade_timeout_keeps_shared(driver: Driver) -> None:
    a = await driver.acquire("vm/a", mode="shared", owner="a")
    b = await driver.acquire("vm/a", mode="shared", owner="b")
    with pytest.raises(exceptions.LockTimeout):
        await driver.upgrade(a, timeout=0.1)
    assert a.mode("vm/a") is Mode.SHARED and queued(driver.locks, "vm/a") == 0
    a.release()
    await driver.upgrade(b, timeout=1.0)
    b.release()


async def test_tokens_strictly_increase(driver: Driver) -> None:
    tokens = []
    for i in range(5):
        held = await driver.acquire("vm/a", owner=f"o{i}")
        tokens.append(held.token("vm/a"))
        held.release()
    assert tokens == sorted(set(tokens))
    driver.locks.check_token("vm/a", tokens[-1])
    with pytest.raises(exceptions.StaleToken):
        driver.locks.check_token("vm/a", tokens[0])


async def test_release_is_idempotent_and_key_release_checks(driver: Driver) -> None:
    held = await driver.acquire("vm/a", "vm/b", owner="o")
    with pytest.raises(exceptions.NotHeld):
        held.release("vm/z")
    held.release("vm/a")
    assert held.holds("vm/b") and not held.holds("vm/a")
    with pytest.raises(exceptions.NotHeld):
        held.release("vm/a")
    held.release()
    held.release()
    assert held.released
    with pytest.raises(exceptions.LockReleased):
        held.token("vm/b")


async def test_release_all_releases_and_cancels_waiters(driver: Driver) -> None:
    mine = await driver.acquire("vm/a", owner="t")
    blocker = await driver.acquire("vm/b", owner="other")
    waiting = driver.start("vm/b", owner="t")
    await eventually(lambda: queued(driver.locks, "vm/b") == 1)
    driver.locks.release_all("t")
    with pytest.raises(exceptions.LockCancelled):
        await asyncio.wait_for(waiting, 5)
    assert mine.released and not blocker.released
    assert [s.key for s in driver.locks.status()] == ["vm/b"]
    blocker.release()


async def test_on_wait_called_once_only_when_queuing(driver: Driver) -> None:
    calls: list[str] = []
    held = await driver.acquire("vm/a", owner="a", on_wait=lambda: calls.append("a"))
    assert calls == []
    waiting = driver.start("vm/a", "vm/b", owner="b", on_wait=lambda: calls.append("b"))
    await eventually(lambda: calls == ["b"])
    held.release()
    (await asyncio.wait_for(waiting, 5)).release()
    assert calls == ["b"]


async def test_status_records(driver: Driver) -> None:
    held = await driver.acquire("vm/a", mode="shared", owner="r")
    waiting = driver.start("vm/a", owner="w")
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    (status,) = driver.locks.status()
    assert status.key == "vm/a" and status.mode is Mode.SHARED
    assert [(h.owner, h.token) for h in status.holders] == [("r", 1)]
    assert [(w.owner, w.mode) for w in status.queue] == [("w", Mode.EXCLUSIVE)]
    held.release()
    (await asyncio.wait_for(waiting, 5)).release()


@pytest.mark.parametrize(
    ("keys", "kw", "match"),
    [
        (("vm",), {}, "namespace/name"),
        (("VM/a",), {}, "namespace"),
        (("vm/",), {}, "empty name"),
        (("vm/a\n",), {}, "control"),
        (("vm/" + "x" * 256,), {}, "at most 255"),
        ((5,), {}, "got int"),
        ((), {}, "at least one"),
        (("vm/a",), {"mode": "read"}, "mode"),
        (("vm/a",), {"owner": ""}, "owner"),
        (("vm/a",), {"owner": 7}, "owner"),
        (("vm/a",), {"timeout": -1.0}, "timeout"),
        (("vm/a",), {"timeout": float("nan")}, "timeout"),
        (("vm/a",), {"timeout": "soon"}, "timeout"),
        (("vm/a",), {"on_wait": 3}, "on_wait"),
    ],
)
async def test_bad_input_is_a_clear_error_and_changes_nothing(
    driver: Driver, keys: tuple[Any, ...], kw: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"owner": "o", **kw}
    with pytest.raises(exceptions.InvalidInput, match=match):
        driver.locks.acquire(*keys, **args)
    assert driver.locks.status() == []


async def test_request_cannot_be_used_twice(driver: Driver) -> None:
    req = driver.locks.acquire("vm/a", owner="o")
    held = await (req if driver.kind != "threads" else asyncio.to_thread(req.wait))
    with pytest.raises(exceptions.LockRequestProcessed):
        await (req if driver.kind != "threads" else asyncio.to_thread(req.wait))
    held.release()


async def test_release_all_during_upgrade_wakes_the_upgrader(driver: Driver) -> None:
    a = await driver.acquire("vm/a", mode="shared", owner="a")
    b = await driver.acquire("vm/a", mode="shared", owner="b")
    pending = driver.start_upgrade(a, timeout=5.0)
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    (status,) = driver.locks.status()
    assert status.queue[0].upgrade and status.queue[0].owner == "a"
    driver.locks.release_all("a")
    with pytest.raises(exceptions.LockCancelled):
        await asyncio.wait_for(pending, 5)
    assert a.released and not b.released
    b.release()
    assert driver.locks.status() == []


async def test_zero_and_huge_timeouts(driver: Driver) -> None:
    a = await driver.acquire("vm/a", owner="a")
    with pytest.raises(exceptions.LockTimeout):
        await driver.acquire("vm/a", owner="b", timeout=0)
    waiting = driver.start("vm/a", owner="c", timeout=1e12)
    await eventually(lambda: queued(driver.locks, "vm/a") == 1)
    a.release()
    (await asyncio.wait_for(waiting, 5)).release()


async def test_multi_key_waiter_wakes_when_last_key_frees(driver: Driver) -> None:
    b = await driver.acquire("vm/b", owner="b")
    c = await driver.acquire("vm/c", mode="shared", owner="c")
    multi = driver.start("vm/a", "vm/b", "vm/c", owner="m")
    await eventually(lambda: queued(driver.locks, "vm/b") == 1)
    b.release()
    await eventually(lambda: queued(driver.locks, "vm/c") == 1)
    assert not multi.done()
    c.release()
    held = await asyncio.wait_for(multi, 5)
    assert [held.token(k) for k in held.keys] == [1, 2, 2]
    held.release()


async def test_upgrade_or_downgrade_after_release_all_is_lock_released(driver: Driver) -> None:
    held = await driver.acquire("vm/a", mode="shared", owner="t")
    driver.locks.release_all("t")
    with pytest.raises(exceptions.LockReleased):
        await driver.upgrade(held, timeout=1.0)
    with pytest.raises(exceptions.LockReleased):
        held.downgrade()
