"""Chaos (``-m slow``): many workers doing random multi-key acquires, upgrades, downgrades,
timeouts and partial releases while a killer calls ``release_all`` on random owners. An
occupancy ledger checks mutual exclusion at every step; at the end nothing may be left held or
queued, and no waiter may be stuck."""

from __future__ import annotations

import asyncio
import random
import threading

import pytest

from corral import exceptions
from corral.locks import Held, LockManager, ThreadLockManager

KEYS = [f"vm/{i}" for i in range(5)]
EXPECTED = (
    exceptions.LockTimeout,
    exceptions.LockCancelled,
    exceptions.UpgradeConflict,
    exceptions.LockReleased,  # release_all took it away before an upgrade or downgrade
)


def _mode(held: Held, key: str) -> str | None:
    try:
        return str(held.mode(key))
    except (exceptions.LockReleased, exceptions.NotHeld):
        return None  # released, maybe by release_all behind the holder's back


class Ledger:
    """Who is inside which key, according to the holders themselves. A holder whose lock
    ``release_all`` took away is no longer inside (that is what fencing tokens are for)."""

    def __init__(self) -> None:
        self.inside: dict[str, dict[str, Held]] = {k: {} for k in KEYS}
        self.violations: list[str] = []
        self._guard = threading.Lock()

    def check(self, held: Held) -> None:
        with self._guard:
            for key in held.keys:
                mine = _mode(held, key)
                if mine is None:
                    continue
                others: dict[str, str] = {}
                for owner, other in list(self.inside[key].items()):
                    theirs = _mode(other, key) if owner != held.owner else None
                    if theirs is None:
                        self.inside[key].pop(owner, None)
                    else:
                        others[owner] = theirs
                clash = others and (mine == "exclusive" or "exclusive" in others.values())
                if clash and _mode(held, key) is not None:
                    self.violations.append(f"{held.owner} {mine} on {key} with {others}")
                self.inside[key][held.owner] = held

    def leave(self, held: Held) -> None:
        with self._guard:
            for key in held.keys:
                if self.inside[key].get(held.owner) is held:
                    del self.inside[key][held.owner]


def _plan(rng: random.Random) -> tuple[dict[str, str], float]:
    keys = rng.sample(KEYS, rng.randint(1, 3))
    return {k: rng.choice(["shared", "exclusive"]) for k in keys}, rng.choice([0.0, 0.005, 0.05])


@pytest.mark.slow
def test_thread_chaos() -> None:
    locks = ThreadLockManager()
    ledger = Ledger()
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(i: int) -> None:
        rng = random.Random(i)
        owner = f"w{i}"
        try:
            for _ in range(1500):
                wanted, timeout = _plan(rng)
                try:
                    held = locks.acquire(wanted, owner=owner, timeout=timeout).wait()
                except EXPECTED:
                    continue
                try:
                    ledger.check(held)
                    if rng.random() < 0.2:
                        held.upgrade(timeout=0.01)
                        ledger.check(held)
                    if rng.random() < 0.2:
                        held.downgrade()
                        ledger.check(held)
                except EXPECTED:
                    pass
                finally:
                    ledger.leave(held)
                    held.release()
        except BaseException as exc:
            errors.append(exc)

    def killer() -> None:
        rng = random.Random(99)
        while not stop.is_set():
            locks.release_all(f"w{rng.randrange(6)}")
            stop.wait(0.002)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    kill = threading.Thread(target=killer)
    kill.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    kill.join(10)
    assert not errors, errors[:3]
    assert ledger.violations == []
    assert locks.status() == []


@pytest.mark.slow
async def test_asyncio_chaos() -> None:
    locks = LockManager()
    ledger = Ledger()

    async def work(i: int) -> None:
        rng = random.Random(i)
        owner = f"w{i}"
        for _ in range(500):
            wanted, timeout = _plan(rng)
            try:
                async with locks.acquire(wanted, owner=owner, timeout=timeout) as held:
                    ledger.check(held)
                    await asyncio.sleep(0)
                    if rng.random() < 0.2:
                        await held.upgrade(timeout=0.01)
                        ledger.check(held)
                        await asyncio.sleep(0)
                    ledger.leave(held)
            except EXPECTED:
                continue

    async def killer() -> None:
        rng = random.Random(99)
        while True:
            locks.release_all(f"w{rng.randrange(20)}")
            await asyncio.sleep(0.001)

    kill = asyncio.ensure_future(killer())
    tasks = [asyncio.ensure_future(work(i)) for i in range(20)]
    # a task cancelled at random must never leak its lock either
    await asyncio.sleep(0.05)
    tasks[0].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    kill.cancel()
    unexpected = [r for r in results[1:] if isinstance(r, BaseException)]
    assert not unexpected, unexpected[:3]
    assert ledger.violations == []
    assert locks.status() == []
