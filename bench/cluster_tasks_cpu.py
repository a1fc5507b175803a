"""CPU per durable task, in-process locks against ``PgLockManager``: what the tasks row of
``bench/cluster.py`` spends, split between this Python process and the database's backends.

Run: ``python bench/cluster_tasks_cpu.py`` (about 20 s). Each round runs 600 tasks (two jobs,
``vm/t<i>`` locked, 64 in flight) after 50 for warm-up, first with ``LockManager`` then with
``PgLockManager``, on a scratch database next to ``--pg``; ``--no-cover`` turns the covered
grants off (``PgLockManager.covers_grants = False``) for an A/B. Prints tasks/s, the Python
process's CPU (``getrusage``) and the backends' CPU (``/proc/<pid>/stat``; Linux, and the
server on this machine) per task. ``--functions`` also prints, for each ``PgLockManager``
round, what the lock functions cost per task (calls and PL/pgSQL time from
``pg_stat_user_functions``, with ``track_functions = pl`` set on the scratch database, which
adds its own timing overhead) and the rows written per task in the lock tables.
``--switch-interval 0.0005`` runs with a shorter GIL switch interval: the manager's SQL thread
(and the store's) then waits less for the GIL after each round trip (see docs/cluster.md).
``--latency`` prints, for each ``PgLockManager`` round, how long the engine's acquires waited
for their grant and how long the manager's batches took (p50, p90).

To compare two trees, run each with ``PYTHONPATH=<tree>``: ``python bench/...`` puts ``bench/``
first on the path, not the working directory, so without it ``corral`` comes from wherever the
environment installed it (an editable install of another checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster


def _lock_stats(url: str) -> dict[str, tuple[float, ...]]:
    """Cumulative lock-function calls and self time (ms), and lock-table row writes."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        funcs = conn.execute(
            "SELECT funcname, calls, self_time FROM pg_stat_user_functions"
            " WHERE funcname LIKE 'corral_lock%%'"
        ).fetchall()
        tables = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_user_tables"
            " WHERE relname LIKE 'lock%%'"
        ).fetchall()
    out: dict[str, tuple[float, ...]] = {str(r[0]): (float(r[1]), float(r[2])) for r in funcs}
    out.update({str(r[0]): (float(r[1]), float(r[2]), float(r[3])) for r in tables})
    return out


def _lock_costs(
    before: dict[str, tuple[float, ...]], after: dict[str, tuple[float, ...]], n: int
) -> str:
    """Per task: each lock function's calls and self time, each lock table's writes."""
    parts = []
    for name in sorted(after):
        old = before.get(name, (0.0,) * len(after[name]))
        delta = [(a - b) / n for a, b in zip(after[name], old, strict=True)]
        if not any(delta):
            continue
        if len(delta) == 2:
            parts.append(f"{name} {delta[0]:.2f} calls {delta[1] * 1e3:.0f} us")
        else:
            parts.append(f"{name} +{delta[0]:.2f} ~{delta[1]:.2f} -{delta[2]:.2f} rows")
    return "  per task: " + "; ".join(parts)


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
    waits: list[float] = []
    batches: list[float] = []
    if LATENCY and isinstance(locks, PgLockManager):
        _time_waits(locks, waits, batches)
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
    line = (
        f"{label:14} {n / (t1 - t0):6.0f} tasks/s  python {py / n * 1e3:.2f} ms/task  "
        f"postgresql {(pg1 - pg0) / n * 1e3:.2f} ms/task"
    )
    if waits and batches:
        line += (
            f"\n  acquire -> grant p50 {_pct(waits, 0.5):.1f} ms p90 {_pct(waits, 0.9):.1f} ms;"
            f" batch round trip p50 {_pct(batches, 0.5):.2f} ms p90 {_pct(batches, 0.9):.2f} ms"
            f" ({len(batches)} batches)"
        )
    return line


LATENCY = False  # --latency


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[int(q * (len(values) - 1))] * 1e3


def _time_waits(locks: Any, waits: list[float], batches: list[float]) -> None:
    """Record each acquire's wait for its grant and each batch's round trip (bench only: wraps
    the request class's ``_enter`` for the rest of the process, once, and this manager's
    loop batcher's ``_send`` and ``_complete``)."""
    from corral.locks import pg

    original = getattr(pg.PgLockRequest, "_bench_enter", pg.PgLockRequest._enter)
    pg.PgLockRequest._bench_enter = original  # type: ignore[attr-defined]

    async def enter(self: Any, cls: Any) -> Any:
        start = time.perf_counter()
        try:
            return await original(self, cls)
        finally:
            waits.append(time.perf_counter() - start)

    pg.PgLockRequest._enter = enter  # type: ignore[method-assign]
    # the loop batcher: from a batch's send to its last answer read
    batcher = locks._batcher
    send, complete = batcher._send, batcher._complete
    sent_at: list[float] = []

    def timed_send(batch: Any) -> None:
        sent_at[:] = [time.perf_counter()]
        send(batch)

    def timed_complete() -> None:
        if sent_at:
            batches.append(time.perf_counter() - sent_at[0])
        complete()

    batcher._send = timed_send
    batcher._complete = timed_complete


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-cover", action="store_true", help="PgLockManager grants durable")
    parser.add_argument(
        "--functions", action="store_true", help="lock function calls, time, rows per task"
    )
    parser.add_argument(
        "--latency", action="store_true", help="PgLockManager: acquire waits and batch times"
    )
    parser.add_argument(
        "--switch-interval",
        type=float,
        default=None,
        help="sys.setswitchinterval for the run, in seconds (CPython's default is 0.005)",
    )
    args = parser.parse_args()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)
    global LATENCY
    LATENCY = args.latency
    from corral.locks.pg import PgLockManager

    PgLockManager.covers_grants = not args.no_cover
    name, url = cluster._scratch_db(args.pg)
    if args.functions:
        import psycopg

        with psycopg.connect(args.pg, autocommit=True) as conn:
            conn.execute(f"ALTER DATABASE \"{name}\" SET track_functions = 'pl'")
    try:
        for _ in range(args.rounds):
            for distributed in (False, True):
                before = _lock_stats(url) if args.functions and distributed else {}
                print(asyncio.run(_round(url, args.pg, name, distributed, 600)))
                if before:
                    time.sleep(1.5)  # the backends' statistics reach the view within a second
                    print(_lock_costs(before, _lock_stats(url), 600 + 50))  # with the warm-up
    finally:
        cluster._drop_db(args.pg, name)


if __name__ == "__main__":
    main()
