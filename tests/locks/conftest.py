"""Drivers that let one async scenario run against every lock manager.

The asyncio driver awaits the ``LockManager`` directly; the thread driver runs every blocking
``ThreadLockManager`` call in its own thread, so a scenario can have many requests waiting at
once; the postgres driver awaits a ``PgLockManager`` on a fresh migrated database (skipped
without ``CORRAL_TEST_PG_URL``). ``eventually`` waits for a condition with a deadline (never a
bare sleep).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from corral.locks import Held, LockManager, ThreadLockManager


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.001)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Block until ``condition()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.001)


class AsyncDriver:
    kind = "asyncio"

    def __init__(self) -> None:
        self.locks: Any = LockManager()

    async def acquire(self, *keys: Any, **kw: Any) -> Held:
        return await self.locks.acquire(*keys, **kw)  # type: ignore[no-any-return]

    def start(self, *keys: Any, **kw: Any) -> asyncio.Future[Held]:
        return asyncio.ensure_future(self.acquire(*keys, **kw))

    async def upgrade(self, held: Any, timeout: float | None = None) -> None:
        await held.upgrade(timeout=timeout)

    def start_upgrade(self, held: Any, timeout: float | None = None) -> asyncio.Future[None]:
        return asyncio.ensure_future(self.upgrade(held, timeout))

    async def close(self) -> None:
        pass


class ThreadDriver:
    kind = "threads"

    def __init__(self) -> None:
        self.locks: Any = ThreadLockManager()
        self.pool = ThreadPoolExecutor(max_workers=64)

    def _run(self, fn: Callable[[], Any]) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self.pool, fn)

    async def acquire(self, *keys: Any, **kw: Any) -> Held:
        return await self.start(*keys, **kw)

    def start(self, *keys: Any, **kw: Any) -> asyncio.Future[Held]:
        req = self.locks.acquire(*keys, **kw)
        return self._run(req.wait)

    async def upgrade(self, held: Any, timeout: float | None = None) -> None:
        await self.start_upgrade(held, timeout)

    def start_upgrade(self, held: Any, timeout: float | None = None) -> asyncio.Future[None]:
        return self._run(lambda: held.upgrade(timeout=timeout))

    async def close(self) -> None:
        # A failed test may leave threads waiting: cancel every request so that none hangs.
        for status in self.locks.status():
            for owner in {h.owner for h in status.holders} | {w.owner for w in status.queue}:
                self.locks.release_all(owner)
        self.pool.shutdown(wait=True, cancel_futures=True)


class PgDriver(AsyncDriver):
    kind = "postgres"

    def __init__(self, locks: Any) -> None:
        self.locks = locks

    async def close(self) -> None:
        await self.locks.close()


Driver = AsyncDriver | ThreadDriver | PgDriver


@pytest.fixture
def pg_locks_url(pg_migrated_url: str) -> str:
    """A fresh migrated database for one lock test (tests/conftest.py's ``pg_migrated_url``)."""
    return pg_migrated_url


async def open_pg_locks(url: str, **kw: Any) -> Any:
    """A started ``PgLockManager`` on the migrated database ``url``."""
    from corral.locks.pg import PgLockManager

    kw.setdefault("host_id", "test-host")
    return await PgLockManager(url, **kw).start()


@pytest.fixture(params=["asyncio", "threads", "postgres"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    drv: Driver
    if request.param == "postgres":
        if request.node.get_closest_marker("per_process"):
            pytest.skip("a per-process capability: PgLockManager does not offer it")
        drv = PgDriver(await open_pg_locks(request.getfixturevalue("pg_locks_url")))
    else:
        drv = AsyncDriver() if request.param == "asyncio" else ThreadDriver()
    try:
        yield drv
    finally:
        await drv.close()


def queued(locks: Any, key: str) -> int:
    """How many requests wait in ``key``'s queue (a pending upgrade included)."""
    for status in locks.status():
        if status.key == key:
            return len(status.queue)
    return 0
