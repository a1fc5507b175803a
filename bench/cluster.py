"""Distributed locks across processes: corral's ``PgLockManager`` against tooz, same run.

Run: ``python bench/cluster.py`` (about two minutes; ``--quick`` for a fast look). Needs
PostgreSQL (``--pg``, default ``postgresql://root@127.0.0.1:5432/test``: a scratch database is
created next to it and dropped) and Redis (``--redis``, default ``redis://127.0.0.1:6379``).
Prints, as medians of several runs, side by side:

- exclusive acquire+release pairs/s on one key, uncontended (one process) and with 4 processes
  contending, for corral on PostgreSQL (strict FIFO, durable fencing tokens), tooz's
  ``postgresql`` driver (advisory locks: no FIFO, no tokens) and tooz's ``redis`` driver;
- for corral, a check that the fencing tokens every process saw are distinct and increasing
  per process (a broken grant would show here);
- the lock hand-over across hosts: process A releases, process B (queued) is woken by NOTIFY;
  p50/p99 from the release call to B's grant (clock of one machine, both processes).

Each measuring process is started with ``spawn``, connects, waits at a barrier with the others,
then counts its pairs for a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

KEY = "vm/bench"


def _corral_worker(url: str, idx: int, barrier: Any, duration: float) -> tuple[int, list[int]]:
    from corral.locks.pg import PgLockManager

    async def main() -> tuple[int, list[int]]:
        async with PgLockManager(url, host_id=f"bench-{idx}-{os.getpid()}", lease=30.0) as locks:
            owner = f"owner-{idx}"
            tokens: list[int] = []
            await asyncio.to_thread(barrier.wait, 300)
            end = time.time() + duration
            n = 0
            while time.time() < end:
                async with locks.acquire(KEY, owner=owner) as held:
                    tokens.append(held.token(KEY))
                n += 1
            return n, tokens

    return asyncio.run(main())


def _tooz_worker(url: str, idx: int, barrier: Any, duration: float) -> tuple[int, list[int]]:
    from tooz import coordination

    coord = coordination.get_coordinator(url, f"bench-{idx}-{os.getpid()}".encode())
    coord.start()
    try:
        lock = coord.get_lock(KEY.replace("/", "-").encode())
        barrier.wait(300)
        end = time.time() + duration
        n = 0
        while time.time() < end:
            lock.acquire(blocking=True)
            lock.release()
            n += 1
        return n, []
    finally:
        coord.stop()


def _run(worker: Any, url: str, idx: int, barrier: Any, duration: float, out: Any) -> None:
    out.put(worker(url, idx, barrier, duration))


def measure(kind: str, url: str, procs: int, duration: float) -> tuple[float, bool]:
    """Pairs/s of ``procs`` processes on one key; and whether the tokens check out.

    Every process connects first, then all start their window together (a barrier).
    """
    worker = _corral_worker if kind == "corral" else _tooz_worker
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_run, args=(worker, url, i, barrier, duration, out))
        for i in range(procs)
    ]
    for proc in workers:
        proc.start()
    results = [out.get(True, 600) for _ in workers]
    for proc in workers:
        proc.join(60)
    total = sum(n for n, _ in results)
    tokens = [t for _, ts in results for t in ts]
    ok = len(tokens) == len(set(tokens)) and all(ts == sorted(ts) for _, ts in results)
    return total / duration, ok


def _handover_b(url: str, ready: Any, go: Any, granted: Any, rounds: int) -> None:
    from corral.locks.pg import PgLockManager

    async def main() -> None:
        async with PgLockManager(url, host_id=f"handover-b-{os.getpid()}", lease=30.0) as locks:
            for _ in range(rounds):
                await asyncio.to_thread(go.wait, 60)
                go.clear()
                async with locks.acquire("vm/handover", owner="b", on_wait=ready.set):
                    granted.put(time.perf_counter())

    asyncio.run(main())


async def handover(url: str, rounds: int) -> list[float]:
    """Latency (s) from A's release to B's grant, B queued behind A in another process.

    Strict alternation: B queues (``ready``), A releases, B is granted and releases, A takes
    the lock again and only then lets B queue again (``go``).
    """
    from corral.locks.pg import PgLockManager

    ctx = mp.get_context("spawn")
    ready, go, granted = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_handover_b, args=(url, ready, go, granted, rounds))
    lat: list[float] = []
    async with PgLockManager(url, host_id=f"handover-a-{os.getpid()}", lease=30.0) as locks:
        held = await locks.acquire("vm/handover", owner="a")
        proc.start()
        go.set()
        for _ in range(rounds):
            await asyncio.to_thread(ready.wait, 60)
            ready.clear()
            t0 = time.perf_counter()
            held.release()
            t1 = await asyncio.to_thread(granted.get, True, 60)
            lat.append(t1 - t0)
            held = await locks.acquire("vm/handover", owner="a", timeout=60.0)
            go.set()
        held.release()
    await asyncio.to_thread(proc.join, 60)
    return lat


def _scratch_db(admin: str) -> tuple[str, str]:
    import psycopg

    from corral.store import migrate

    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(admin)._replace(path=f"/{name}").geturl()
    migrate.upgrade(url)
    return name, url


def _drop_db(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="one run of 1.5 s per figure")
    args = parser.parse_args()
    runs, seconds = (1, 1.5) if args.quick else (args.runs, args.seconds)
    name, url = _scratch_db(args.pg)
    try:
        targets = {"corral-pg": ("corral", url), "tooz-pg": ("tooz", args.pg)}
        targets["tooz-redis"] = ("tooz", args.redis)
        table: dict[str, dict[str, float]] = {}
        tokens_ok = True
        for label, (kind, target) in targets.items():
            row = table.setdefault(label, {})
            for procs, column in [(1, "uncontended"), (4, "4 processes")]:
                figures = []
                for _ in range(runs):
                    rate, ok = measure(kind, target, procs, seconds)
                    figures.append(rate)
                    tokens_ok = tokens_ok and ok
                row[column] = statistics.median(figures)
        lat = asyncio.run(handover(url, 60 if args.quick else 200))
    finally:
        _drop_db(args.pg, name)
    load = os.getloadavg()[0]
    print(f"exclusive acquire+release pairs/s, median of {runs} x {seconds}s (load {load:.1f})")
    print(f"{'':12} {'uncontended':>12} {'4 processes':>12} {'x tooz-pg':>10}")
    base = table["tooz-pg"]
    for label, row in table.items():
        ratio = row["4 processes"] / base["4 processes"] if base["4 processes"] else 0.0
        print(f"{label:12} {row['uncontended']:12,.0f} {row['4 processes']:12,.0f} {ratio:9.1f}x")
    for column in ["uncontended", "4 processes"]:
        print(f"corral-pg / tooz-pg {column}: {table['corral-pg'][column] / base[column]:.1f}x")
    print(f"corral fencing tokens distinct and increasing per process: {tokens_ok}")
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
    print(
        f"lock hand-over across processes (release -> NOTIFY -> grant): p50 {p50:.2f} ms, "
        f"p99 {p99:.2f} ms over {len(lat)} hand-overs"
    )


if __name__ == "__main__":
    main()
