"""What is specific to each shell: cancellation, release on exceptions, no suspension on the
uncontended path, garbage-collected locks, guarded objects and ``require_exclusive``."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any

import pytest

from corral import exceptions
from corral.locks import (
    ExclusiveLockRequired,
    Held,
    LockManager,
    LockReleased,
    ThreadLockManager,
    require_exclusive,
)

from .conftest import Driver, eventually, queued, wait_until

# --- asyncio: cancellation ----------------------------------------------------------------


async def test_cancelled_waiter_leaves_the_queue_and_shared_get_in() -> None:
    locks = LockManager()
    r1 = await locks.acquire("vm/a", mode="shared", owner="r1")
    writer = asyncio.ensure_future(locks.acquire("vm/a", owner="w"))
    await eventually(lambda: queued(locks, "vm/a") == 1)
    reader = asyncio.ensure_future(locks.acquire("vm/a", mode="shared", owner="r2"))
    await eventually(lambda: queued(locks, "vm/a") == 2)
    writer.cancel()
    r2 = await asyncio.wait_for(reader, 5)
    assert writer.cancelled()
    r1.release()
    r2.release()
    assert locks.status() == []


async def test_grant_racing_cancellation_is_released() -> None:
    locks = LockManager()
    a = await locks.acquire("vm/a", owner="a")
    waiter = asyncio.ensure_future(locks.acquire("vm/a", owner="b"))
    await eventually(lambda: queued(locks, "vm/a") == 1)
    a.release()  # grants b: its future is resolved, the task has not resumed yet
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert locks.status() == [], "a grant that raced the cancellation must not leak"
    (await locks.acquire("vm/a", owner="c", timeout=0.5)).release()


async def test_async_with_releases_on_exception_and_cancellation() -> None:
    locks = LockManager()
    with pytest.raises(RuntimeError):
        async with locks.acquire("vm/a", owner="t") as held:
            assert held.holds("vm/a")
            raise RuntimeError("boom")
    assert locks.status() == [] and held.released

    inside = asyncio.Event()

    async def body() -> None:
        async with locks.acquire("vm/a", owner="t"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(body())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert locks.status() == []


async def test_uncontended_acquire_never_suspends() -> None:
    locks = LockManager()

    async def grab() -> Held:
        return await locks.acquire("vm/a", owner="t")

    coro = grab()
    with pytest.raises(StopIteration) as stop:
        coro.send(None)  # would yield to the loop if the acquire suspended
    held = stop.value.value
    assert isinstance(held, Held) and held.holds("vm/a")
    held.release()


def test_thread_with_releases_on_exception() -> None:
    locks = ThreadLockManager()
    with pytest.raises(RuntimeError), locks.acquire("vm/a", owner="t"):
        raise RuntimeError("boom")
    assert locks.status() == []


def test_thread_waiter_interrupted_withdraws_its_request() -> None:
    locks = ThreadLockManager()
    a = locks.acquire("vm/a", owner="a").wait()

    def interrupt() -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        locks.acquire("vm/a", owner="b", on_wait=interrupt).wait()
    assert [len(s.queue) for s in locks.status()] == [0]
    a.release()
    assert locks.status() == []


# --- garbage-collected locks --------------------------------------------------------------


async def test_collected_async_held_warns_and_is_released() -> None:
    locks = LockManager()
    held = await locks.acquire("vm/a", owner="t")
    waiter = asyncio.ensure_future(locks.acquire("vm/a", owner="u"))
    await eventually(lambda: queued(locks, "vm/a") == 1)
    with pytest.warns(ResourceWarning, match="garbage-collected"):
        del held
        gc.collect()
    other = await asyncio.wait_for(waiter, 5)
    other.release()


@pytest.mark.parametrize("manager_class", [LockManager, ThreadLockManager])
async def test_collected_held_is_released_by_the_next_call(manager_class: Any) -> None:
    locks = manager_class()
    req = locks.acquire("vm/a", owner="t")
    held = await req if manager_class is LockManager else req.wait()
    del req
    with pytest.warns(ResourceWarning):
        del held
        gc.collect()
    assert locks.status() == [], "nobody waited: the next call on the manager releases it"


async def test_async_with_block_held_is_not_reported_when_dropped() -> None:
    locks = LockManager()
    async with locks.acquire("vm/a", owner="t"):
        gc.collect()  # the Held the block made is unreferenced but the block still owns it
        assert locks.status()[0].holders[0].owner == "t"
    assert locks.status() == []


def test_collected_thread_held_is_released_while_others_wait() -> None:
    locks = ThreadLockManager()
    held = locks.acquire("vm/a", owner="t").wait()
    got: list[Held] = []
    thread = threading.Thread(
        target=lambda: got.append(locks.acquire("vm/a", owner="u", timeout=5.0).wait())
    )
    thread.start()
    wait_until(lambda: queued(locks, "vm/a") == 1)
    with pytest.warns(ResourceWarning):
        del held
        gc.collect()
    thread.join(5)  # the reaper thread releases it; nobody else calls the manager
    assert got and got[0].owner == "u"
    got[0].release()


# --- guarded objects ----------------------------------------------------------------------


class Disk:
    def __init__(self, key: str, log: list[str]) -> None:
        self.key = key
        self.log = log
        log.append(f"open {key}")

    def close(self) -> None:
        self.log.append(f"close {self.key}")


@pytest.mark.per_process
async def test_guarded_object_lifecycle(driver: Driver) -> None:
    log: list[str] = []
    driver.locks.register_namespace("disk", lambda key: Disk(key, log))
    r1 = await driver.acquire("disk/d1", "vm/x", mode="shared", owner="r1")
    assert log == ["open disk/d1"], "created on first acquisition"
    r2 = await driver.acquire("disk/d1", mode="shared", owner="r2")
    ref1, ref2 = r1.ref("disk/d1"), r2.ref("disk/d1")
    assert ref1.obj is ref2.obj and ref1.valid
    with pytest.raises(exceptions.InvalidInput):
        r1.ref("vm/x")  # no factory for the vm namespace
    r1.release()
    with pytest.raises(LockReleased):
        _ = ref1.obj
    assert ref2.obj.key == "disk/d1" and log == ["open disk/d1"]  # type: ignore[attr-defined]
    r2.release()
    assert log == ["open disk/d1", "close disk/d1"], "closed when the last holder releases"
    with pytest.raises(LockReleased):
        _ = ref2.obj
    r3 = await driver.acquire("disk/d1", owner="r3")
    assert r3.ref("disk/d1").obj is not ref1._entry._obj and log[-1] == "open disk/d1"
    r3.release()


@pytest.mark.per_process
async def test_guarded_factory_failure_fails_the_acquire(driver: Driver) -> None:
    def broken(key: str) -> object:
        raise ValueError("no such disk")

    driver.locks.register_namespace("disk", broken)
    with pytest.raises(ValueError, match="no such disk"):
        await driver.acquire("disk/d1", owner="t")
    assert driver.locks.status() == []
    with pytest.raises(exceptions.InvalidInput):
        driver.locks.register_namespace("Bad NS", broken)


# --- require_exclusive --------------------------------------------------------------------


@require_exclusive
def change(ctx: Held, value: int) -> int:
    return value * 2


class Service:
    @require_exclusive
    async def change(self, ctx: Any, value: int) -> int:
        return value + 1


class JobContext:
    def __init__(self, held: Held) -> None:
        self.held = held


async def test_require_exclusive_refuses_shared_contexts(driver: Driver) -> None:
    shared = await driver.acquire("vm/a", mode="shared", owner="r")
    with pytest.raises(ExclusiveLockRequired):
        change(shared, 1)
    with pytest.raises(ExclusiveLockRequired):
        await Service().change(JobContext(shared), 1)
    shared.release()
    with pytest.raises(LockReleased):
        change(shared, 1)
    excl = await driver.acquire("vm/a", "vm/b", owner="w")
    assert change(excl, 2) == 4
    assert await Service().change(ctx=JobContext(excl), value=2) == 3
    excl.release()
    with pytest.raises(ExclusiveLockRequired, match="lock context"):
        change(None, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("manager_class", [LockManager, ThreadLockManager])
def test_acquire_builds_requests_like_their_constructor(manager_class: Any) -> None:
    locks = manager_class()
    fast = locks.acquire("vm/a", owner="o", timeout=1.5)
    slow = type(fast)(locks, "o", ("vm/a",), fast.modes, 1.5, None)
    slots = [s for cls in type(fast).__mro__ for s in getattr(cls, "__slots__", ())]
    set_fast = {s: getattr(fast, s) for s in slots if hasattr(fast, s)}
    set_slow = {s: getattr(slow, s) for s in slots if hasattr(slow, s)}
    assert set_fast == set_slow
