"""Mutual exclusion under real concurrency: a read-modify-write counter that loses updates
without the lock (the suspension between read and write invites every other worker in), plus
shared readers that must never overlap a writer."""

from __future__ import annotations

import asyncio
import random
import threading
import time

from corral.locks import LockManager, ThreadLockManager

KEYS = ["vm/a", "vm/b", "vm/c"]


class Counter:
    def __init__(self) -> None:
        self.value = 0
        self.writers = 0
        self.readers = 0
        self.violations: list[str] = []
        self._guard = threading.Lock()

    def enter(self, writer: bool) -> None:
        with self._guard:
            if writer:
                self.writers += 1
            else:
                self.readers += 1
            if self.writers > 1 or (self.writers and self.readers):
                self.violations.append(f"writers={self.writers} readers={self.readers}")

    def leave(self, writer: bool) -> None:
        with self._guard:
            if writer:
                self.writers -= 1
            else:
                self.readers -= 1


def test_threads_never_lose_updates() -> None:
    locks = ThreadLockManager()
    counter = Counter()
    threads, rounds = 8, 150
    errors: list[BaseException] = []

    def work(i: int) -> None:
        rng = random.Random(i)
        try:
            for n in range(rounds):
                writer = n % 3 != 0
                keys = ["vm/a", *rng.sample(KEYS[1:], rng.randint(0, 2))]
                mode = "exclusive" if writer else "shared"
                with locks.acquire(*keys, mode=mode, owner=f"t{i}", timeout=30.0):
                    counter.enter(writer)
                    value = counter.value
                    time.sleep(0)  # let every other thread run between read and write
                    if writer:
                        counter.value = value + 1
                    counter.leave(writer)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert not errors
    assert counter.violations == []
    expected = threads * sum(1 for n in range(rounds) if n % 3 != 0)
    assert counter.value == expected
    assert locks.status() == []


async def _hammer(locks: LockManager | None, tasks: int, rounds: int) -> Counter:
    counter = Counter()

    async def step(i: int, n: int, writer: bool) -> None:
        counter.enter(writer)
        value = counter.value
        await asyncio.sleep(0)  # every other task runs here
        if writer:
            counter.value = value + 1
        counter.leave(writer)

    async def work(i: int) -> None:
        rng = random.Random(i)
        for n in range(rounds):
            writer = n % 4 != 0
            if locks is None:
                await step(i, n, writer)
                continue
            keys = ["vm/a", *rng.sample(KEYS[1:], rng.randint(0, 2))]
            mode = "exclusive" if writer else "shared"
            async with locks.acquire(*keys, mode=mode, owner=f"t{i}", timeout=30.0):
                await step(i, n, writer)

    await asyncio.gather(*(work(i) for i in range(tasks)))
    return counter


async def test_tasks_never_lose_updates() -> None:
    tasks, rounds = 50, 40
    expected = tasks * sum(1 for n in range(rounds) if n % 4 != 0)
    unprotected = await _hammer(None, tasks, rounds)
    assert unprotected.value < expected, "the scenario must lose updates without a lock"
    locks = LockManager()
    counter = await _hammer(locks, tasks, rounds)
    assert counter.violations == []
    assert counter.value == expected
    assert locks.status() == []
