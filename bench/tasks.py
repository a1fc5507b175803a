"""Benchmark: durable 3-job tasks per second (issue 3), corral vs OpenStack TaskFlow.

Each corral task has 3 trivial jobs, each pushing a recovery (write-ahead) before it "acts";
persist ``auto``, clean ``auto``. Measured on a SQLite file (WAL, ``synchronous=NORMAL``: a
committed transaction survives kill -9 of the process, not a power cut), with the third job
failing so that two recoveries run, and on PostgreSQL (``synchronous_commit=on``). The same flows
run on TaskFlow: a linear flow of 3 tasks with reverts, SQLAlchemy persistence on a SQLite file.

    python bench/tasks.py [--runs 5] [--tasks 2000] [--pg postgresql://root@127.0.0.1:5432/test]

Prints the median of the runs and the ratio to TaskFlow measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path

# Run as a script, sys.path[0] is bench/ (whose modules may shadow the stdlib, e.g. http.py):
# replace it with this tree's root so `corral` is this tree's, whatever is installed.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from corral.locks import LockManager  # noqa: E402
from corral.store import open_store  # noqa: E402
from corral.store.types import JSON  # noqa: E402
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState  # noqa: E402

TASKFLOW_REFERENCE = (7.5, 3.5)  # flows/s measured when the issue was written (ok, with revert)

registry = StepRegistry()


@registry.job("bench.job")
async def job(ctx: JobContext, *, i: int) -> JSON:
    await ctx.push_recovery("bench.undo", i=i)
    return i


@registry.job("bench.fail")
async def fail(ctx: JobContext, *, i: int) -> JSON:
    raise RuntimeError("the third job fails")


@registry.recovery("bench.undo")
async def undo(ctx: JobContext, *, i: int) -> JSON:
    return None


async def corral_run(url: str, n: int, failing: bool, concurrency: int) -> float:
    store = await open_store(url)
    engine = TaskEngine(store, LockManager(), registry, max_running=64)
    await engine.start()
    jobs = [Step("bench.job", {"i": 0}), Step("bench.job", {"i": 1})]
    jobs.append(Step("bench.fail" if failing else "bench.job", {"i": 2}))
    want = TaskState.RECOVERED if failing else TaskState.FINISHED
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            info = await engine.wait(await engine.submit("bench", jobs=jobs))
            assert info.state is want, info

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    elapsed = time.perf_counter() - start
    await engine.close()
    await store.close()
    return n / elapsed


def corral_sqlite(n: int, failing: bool, concurrency: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(corral_run(f"sqlite:///{tmp}/bench.db", n, failing, concurrency))


def corral_pg(admin: str, n: int, failing: bool, concurrency: int) -> float:
    import psycopg

    name = f"corral_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        base = admin.rsplit("/", 1)[0]
        return asyncio.run(corral_run(f"{base}/{name}", n, failing, concurrency))
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def taskflow(n: int, failing: bool) -> float:
    from taskflow import engines, task
    from taskflow.patterns import linear_flow
    from taskflow.persistence import backends
    from taskflow.utils import persistence_utils

    class Job(task.Task):  # type: ignore[misc]
        def execute(self) -> int:
            return 1

        def revert(self, **kwargs: object) -> None:
            return None

    class Fail(Job):
        def execute(self) -> int:
            raise RuntimeError("the third task fails")

    with tempfile.TemporaryDirectory() as tmp:
        backend = backends.fetch({"connection": f"sqlite:///{tmp}/taskflow.db"})
        with contextlib.closing(backend.get_connection()) as conn:
            conn.upgrade()
        start = time.perf_counter()
        for _ in range(n):
            flow = linear_flow.Flow("bench").add(
                Job("a"), Job("b"), (Fail if failing else Job)("c")
            )
            book, detail = persistence_utils.temporary_flow_detail(backend)
            engine = engines.load(flow, flow_detail=detail, book=book, backend=backend)
            try:
                engine.run()
            except RuntimeError:
                assert failing
        return n / (time.perf_counter() - start)


def median(fn: object, runs: int) -> float:
    values = [fn() for _ in range(runs)]  # type: ignore[operator]
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000, help="corral tasks per run")
    parser.add_argument("--concurrency", type=int, default=256, help="corral tasks in flight")
    parser.add_argument("--flows", type=int, default=20, help="TaskFlow flows per run")
    parser.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL"), help="PostgreSQL URL")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    n, runs, conc = args.tasks, args.runs, args.concurrency

    print(
        f"durable 3-job tasks/s, median of {runs} runs ({n} corral tasks per run, {conc} in flight)"
    )
    print("SQLite: journal_mode=WAL, synchronous=NORMAL (survives kill -9; not a power cut)")
    if args.pg:
        print("PostgreSQL: server settings (synchronous_commit=on by default: each commit on disk)")
    rows: list[tuple[str, float, float | None]] = []
    tf_ok = tf_fail = None
    try:
        tf_ok = median(lambda: taskflow(args.flows, False), runs)
        tf_fail = median(lambda: taskflow(args.flows, True), runs)
    except ImportError:
        print(
            f"TaskFlow is not installed (pip install -e '.[bench]'): reference {TASKFLOW_REFERENCE}"
        )
        tf_ok, tf_fail = TASKFLOW_REFERENCE
    rows.append(("corral SQLite", median(lambda: corral_sqlite(n, False, conc), runs), tf_ok))
    rows.append(
        (
            "corral SQLite, 3rd job fails, 2 recoveries",
            median(lambda: corral_sqlite(n, True, conc), runs),
            tf_fail,
        )
    )
    rows.append(
        (
            "corral SQLite, one task at a time",
            median(lambda: corral_sqlite(n // 4, False, 1), runs),
            tf_ok,
        )
    )
    if args.pg:
        rows.append(
            ("corral PostgreSQL", median(lambda: corral_pg(args.pg, n, False, conc), runs), None)
        )
        rows.append(
            (
                "corral PostgreSQL, 3rd job fails",
                median(lambda: corral_pg(args.pg, n, True, conc), runs),
                None,
            )
        )
    rows.append(("TaskFlow SQLite", tf_ok, None))
    rows.append(("TaskFlow SQLite, 3rd task fails (revert)", tf_fail, None))
    for name, value, ref in rows:
        ratio = f"  {value / ref:7.1f}x TaskFlow" if ref else ""
        print(f"  {name:45s} {value:9.1f}/s{ratio}")


if __name__ == "__main__":
    main()
