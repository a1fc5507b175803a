"""CPU per durable task, in-process locks against ``PgLockManager``: what the tasks row of
``bench/cluster.py`` spends, split between this Python process and the database's backends.

Run: ``python bench/cluster_tasks_cpu.py`` (about 20 s). Each round runs 600 tasks (two jobs,
``vm/t<i>`` locked, 64 in flight) after 50 for warm-up, first with ``LockManager`` then with
``PgLockManager``, on a scratch database next to ``--pg``; ``--no-cover`` turns the covered
grants off (``PgLockManager.covers_grants = False``) for an A/B. Prints tasks/s, the Python
process's CPU (``getrusage``) and the backends' CPU (``/proc/<pid>/stat``; Linux, and the
server on this machine) per task.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster


def _backend_cpu(admin: str, db: str) -> float:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        pids = [
            r[0] for r in conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (db,))
        ]
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / 100.0


async def _round(url: str, admin: str, db: str, distributed: bool, n: int) -> str:
    from corral.locks import LockManager
    from corral.locks.pg import PgLockManager
    from corral.store import open_store
    from corral.tasks import Step, TaskEngine

    store = await open_store(url)
    locks: LockManager | PgLockManager = LockManager()
    if distributed:
        locks = await PgLockManager(url, host_id="bench-cpu", lease=30.0).start()
    engine = TaskEngine(store, locks, cluster._REGISTRY, max_running=64)
    await engine.start()
    gate = asyncio.Semaphore(64)
    jobs = [Step("bench.cluster.job", {"i": 0}), Step("bench.cluster.job", {"i": 1})]

    async def one(i: int) -> None:
        async with gate:
            await engine.wait(await engine.submit("b", jobs=jobs, locks={f"vm/t{i}": "exclusive"}))

    await asyncio.gather(*(one(i) for i in range(50)))
    pg0 = await asyncio.to_thread(_backend_cpu, admin, db)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(100, 100 + n)))
    t1, r1 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    pg1 = await asyncio.to_thread(_backend_cpu, admin, db)
    await engine.close()
    if isinstance(locks, PgLockManager):
        await locks.close()
    await store.close()
    py = r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime
    label = "PgLockManager" if distributed else "in-process"
    return (
        f"{label:14} {n / (t1 - t0):6.0f} tasks/s  python {py / n * 1e3:.2f} ms/task  "
        f"postgresql {(pg1 - pg0) / n * 1e3:.2f} ms/task"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-cover", action="store_true", help="PgLockManager grants durable")
    args = parser.parse_args()
    from corral.locks.pg import PgLockManager

    PgLockManager.covers_grants = not args.no_cover
    name, url = cluster._scratch_db(args.pg)
    try:
        for _ in range(args.rounds):
            for distributed in (False, True):
                print(asyncio.run(_round(url, args.pg, name, distributed, 600)))
    finally:
        cluster._drop_db(args.pg, name)


if __name__ == "__main__":
    main()
