"""Benchmark: durable 3-job tasks per second (issue 3), corral vs OpenStack TaskFlow.

Each corral task has 3 trivial jobs, each pushing a recovery (write-ahead) before it "acts";
persist ``auto``, clean ``auto``. Measured on a SQLite file (WAL, ``synchronous=NORMAL``: a
committed transaction survives kill -9 of the process, not a power cut), with the third job
failing so that two recoveries run, and on PostgreSQL (``synchronous_commit=on``). The same flows
run on TaskFlow: a linear flow of 3 tasks with reverts, SQLAlchemy persistence on a SQLite file with
the same pragmas (its default rollback journal would measure the disk's fsync, not the engine).

    python bench/tasks.py [--runs 5] [--tasks 2000] [--pg postgresql://root@127.0.0.1:5432/test]

Two like-for-like comparisons, each against TaskFlow measured in the same run:
- one at a time: corral with one task in flight against TaskFlow's serial engine running one
  flow at a time (the latency of one durable operation, commit by commit);
- concurrent: corral with ``--concurrency`` tasks in flight (the engine's group commit folds their
  commits) against TaskFlow's parallel engine running ``--flows`` linear flows at once in one
  unordered flow with ``--workers`` threads (TaskFlow's own way to run flows concurrently).
Every line says what its ratio is against. Without TaskFlow installed nothing is compared: the
bench says so and prints the recorded reference with its date and machine, never as measured.
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
from collections.abc import Callable
from pathlib import Path

# Run as a script, sys.path[0] is bench/ (whose modules may shadow the stdlib, e.g. http.py):
# replace it with this tree's root so `corral` is this tree's, whatever is installed.
sys.path[0] = str(Path(__file__).resolve().parents[1])

from corral.locks import LockManager  # noqa: E402
from corral.store import open_store  # noqa: E402
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState  # noqa: E402
from corral.types import JSON  # noqa: E402

TASKFLOW_RECORDED = (
    "serial 1.2 flows/s, serial with revert 0.7/s, parallel engine (64 flows, 16 threads) 1.3/s"
    " (TaskFlow 6.5, WAL + synchronous=NORMAL; 2026-12-02 on a 2-vCPU AMD EPYC VM shared with"
    " other jobs, load average 9-12)"
)
"""TaskFlow's figures from an earlier run of this bench, printed (labelled) only when TaskFlow is
not installed: never used as a measurement nor in a ratio."""

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


def _taskflow_classes() -> tuple[type, type]:
    from taskflow import task

    class Job(task.Task):  # type: ignore[misc]
        def execute(self) -> int:
            return 1

        def revert(self, **kwargs: object) -> None:
            return None

    class Fail(Job):
        def execute(self) -> int:
            raise RuntimeError("the third task fails")

    return Job, Fail


def _taskflow_backend(tmp: str) -> object:
    """TaskFlow's SQLAlchemy persistence on a SQLite file with corral's pragmas (WAL,
    ``synchronous=NORMAL``), so that both pay the same durability, not the disk's fsync."""
    import sqlalchemy
    from taskflow.persistence.backends import impl_sqlalchemy

    url = f"sqlite:///{tmp}/taskflow.db"
    engine = sqlalchemy.create_engine(url)

    @sqlalchemy.event.listens_for(engine, "connect")
    def pragmas(dbapi_conn: object, _record: object) -> None:
        cursor = dbapi_conn.cursor()  # type: ignore[attr-defined]
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    backend = impl_sqlalchemy.SQLAlchemyBackend({"connection": url}, engine=engine)
    with contextlib.closing(backend.get_connection()) as conn:
        conn.upgrade()
    return backend


def taskflow(n: int, failing: bool) -> float:
    """TaskFlow's serial engine, ``n`` linear 3-task flows one after another: flows/s."""
    from taskflow import engines
    from taskflow.patterns import linear_flow
    from taskflow.utils import persistence_utils

    job, fail_ = _taskflow_classes()
    with tempfile.TemporaryDirectory() as tmp:
        backend = _taskflow_backend(tmp)
        start = time.perf_counter()
        for _ in range(n):
            flow = linear_flow.Flow("bench").add(
                job("a"), job("b"), (fail_ if failing else job)("c")
            )
            book, detail = persistence_utils.temporary_flow_detail(backend)
            engine = engines.load(flow, flow_detail=detail, book=book, backend=backend)
            try:
                engine.run()
            except RuntimeError:
                assert failing
        return n / (time.perf_counter() - start)


def taskflow_parallel(n: int, workers: int) -> float:
    """TaskFlow's parallel engine: ``n`` linear 3-task flows at once (one unordered flow),
    ``workers`` threads, persisted like the serial run: flows/s."""
    from taskflow import engines
    from taskflow.patterns import linear_flow, unordered_flow
    from taskflow.utils import persistence_utils

    job, _fail = _taskflow_classes()
    with tempfile.TemporaryDirectory() as tmp:
        backend = _taskflow_backend(tmp)
        start = time.perf_counter()
        flow = unordered_flow.Flow("bench")
        for i in range(n):
            flow.add(linear_flow.Flow(f"f{i}").add(job(f"a{i}"), job(f"b{i}"), job(f"c{i}")))
        book, detail = persistence_utils.temporary_flow_detail(backend)
        engine = engines.load(
            flow,
            flow_detail=detail,
            book=book,
            backend=backend,
            engine="parallel",
            max_workers=workers,
        )
        engine.run()
        return n / (time.perf_counter() - start)


def median(fn: Callable[[], float], runs: int) -> float:
    """The median of ``runs`` calls of ``fn``."""
    return statistics.median(fn() for _ in range(runs))


def row(name: str, value: float, ref: float | None, ref_name: str) -> None:
    """One line: the figure, and its ratio to the named reference (or why there is none)."""
    ratio = f"{value / ref:8.1f}x {ref_name}" if ref else f"   ref: {ref_name}"
    print(f"  {name:58s} {value:9.1f}/s {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=2000, help="corral tasks per run")
    parser.add_argument("--concurrency", type=int, default=256, help="corral tasks in flight")
    parser.add_argument("--flows", type=int, default=20, help="TaskFlow serial flows per run")
    parser.add_argument("--parallel-flows", type=int, default=64, help="TaskFlow parallel flows")
    parser.add_argument("--workers", type=int, default=16, help="TaskFlow parallel threads")
    parser.add_argument("--pg", default=os.environ.get("CORRAL_TEST_PG_URL"), help="PostgreSQL URL")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    n, runs, conc = args.tasks, args.runs, args.concurrency

    print(f"durable 3-job tasks/s, median of {runs} runs; load average {os.getloadavg()[0]:.1f}")
    print("SQLite: journal_mode=WAL, synchronous=NORMAL (survives kill -9; not a power cut),")
    print("        the same for corral and for TaskFlow (set on its SQLAlchemy engine)")
    if args.pg:
        print("PostgreSQL: server settings (synchronous_commit=on by default: each commit on disk)")
    tf_serial = tf_revert = tf_parallel = None
    try:
        tf_serial = median(lambda: taskflow(args.flows, False), runs)
        tf_revert = median(lambda: taskflow(args.flows, True), runs)
        tf_parallel = median(lambda: taskflow_parallel(args.parallel_flows, args.workers), runs)
    except ImportError:
        print("TaskFlow not measured (not installed: pip install -e '.[bench]'); no ratio printed.")
        print(f"  recorded reference, not measured here: {TASKFLOW_RECORDED}")
    measured = "measured in this run" if tf_serial is not None else "not measured"
    serial_ref = f"TaskFlow serial ({measured})"
    parallel_ref = f"TaskFlow parallel ({measured})"

    print("one at a time (like for like: one operation in flight in each system)")
    one = median(lambda: corral_sqlite(max(1, n // 4), False, 1), runs)
    row("corral SQLite, 1 task in flight", one, tf_serial, serial_ref)
    one_fail = median(lambda: corral_sqlite(max(1, n // 4), True, 1), runs)
    row(
        "corral SQLite, 1 in flight, 3rd job fails, 2 recoveries",
        one_fail,
        tf_revert,
        f"TaskFlow serial revert ({measured})",
    )
    if tf_serial is not None and tf_revert is not None:
        row(
            f"TaskFlow SQLite, serial engine, {args.flows} flows one by one",
            tf_serial,
            None,
            "this is the reference",
        )
        row(
            "TaskFlow SQLite, serial engine, 3rd task fails (revert)",
            tf_revert,
            None,
            "this is the reference",
        )

    print("concurrent (each system's own concurrency; corral folds commits: group commit)")
    many = median(lambda: corral_sqlite(n, False, conc), runs)
    row(f"corral SQLite, {conc} tasks in flight", many, tf_parallel, parallel_ref)
    many_fail = median(lambda: corral_sqlite(n, True, conc), runs)
    row(
        f"corral SQLite, {conc} in flight, 3rd job fails",
        many_fail,
        None,
        "none (TaskFlow's unordered flow reverts every flow on one failure)",
    )
    if tf_parallel is not None:
        row(
            f"TaskFlow SQLite, parallel engine, {args.parallel_flows} flows x {args.workers} "
            "threads",
            tf_parallel,
            None,
            "this is the reference",
        )
    if args.pg:
        pg = median(lambda: corral_pg(args.pg, n, False, conc), runs)
        row(f"corral PostgreSQL, {conc} in flight", pg, None, "none (TaskFlow ran on SQLite)")
        pg_fail = median(lambda: corral_pg(args.pg, n, True, conc), runs)
        row(
            f"corral PostgreSQL, {conc} in flight, 3rd job fails",
            pg_fail,
            None,
            "none (TaskFlow ran on SQLite)",
        )


if __name__ == "__main__":
    main()
