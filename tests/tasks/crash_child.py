"""Child process of the crash tests: runs a stream of tasks until it is killed (SIGKILL).

``python crash_child.py URL SEED MODE``. MODE ``run`` recovers what the store holds and then
submits tasks forever; MODE ``finish`` recovers, rolls back every task waiting in waitrecover,
waits until every task is done and exits. Jobs record their side effects ("do"/"undo" rows)
in the same database, each in its own committed transaction, so the parent can check that
nothing was half-done and forgotten.
"""

from __future__ import annotations

import asyncio
import random
import sqlite3
import sys
from typing import Any

from corral.locks import LockManager
from corral.store import open_store, parse
from corral.store.types import JSON
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState

EFFECTS_DDL = (
    "CREATE TABLE IF NOT EXISTS crash_effects (task_id TEXT NOT NULL, job INTEGER NOT NULL,"
    " kind TEXT NOT NULL, PRIMARY KEY (task_id, job, kind))"
)
EFFECT_SQL = "INSERT INTO crash_effects VALUES (%s, %s, %s) ON CONFLICT DO NOTHING"
SUBMITTED_DDL = "CREATE TABLE IF NOT EXISTS crash_submitted (task_id TEXT PRIMARY KEY, n INTEGER)"
SUBMITTED_SQL = "INSERT INTO crash_submitted VALUES (%s, %s)"


class Effects:
    """A plain DB-API connection to the store's database for the side-effect rows."""

    def __init__(self, url: str) -> None:
        parsed = parse(url)
        self.conn: Any
        if parsed.kind == "sqlite":
            assert parsed.path is not None
            self.conn = sqlite3.connect(parsed.path, timeout=30, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.mark = "?"
        else:
            import psycopg

            self.conn = psycopg.connect(url, autocommit=True)
            self.mark = "%s"
        self.conn.execute(EFFECTS_DDL)
        self.conn.execute(SUBMITTED_DDL)

    def write(self, sql: str, *params: object) -> None:
        self.conn.execute(sql.replace("%s", self.mark), params)


def registry(effects: Effects) -> StepRegistry:
    reg = StepRegistry()

    @reg.job("crash.do")
    async def do(ctx: JobContext, *, job: int, fail: bool = False) -> JSON:
        await ctx.push_recovery("crash.undo", job=job)
        await asyncio.sleep(random.random() * 0.004)
        if fail:
            raise RuntimeError(f"job {job} fails on purpose")
        effects.write(EFFECT_SQL, ctx.task_id, job, "do")
        await asyncio.sleep(random.random() * 0.002)
        return job

    @reg.recovery("crash.undo")
    async def undo(ctx: JobContext, *, job: int) -> JSON:
        await asyncio.sleep(random.random() * 0.002)
        effects.write(EFFECT_SQL, ctx.task_id, job, "undo")
        return None

    return reg


KINDS = [
    ("auto", False),
    ("auto", True),  # third job fails: two recoveries run
    ("manual", True),  # waits in waitrecover until rolled back
    ("resume", False),
    ("auto", False),  # rolled back after it finished
]


async def submit_one(engine: TaskEngine, effects: Effects, n: int) -> None:
    policy, failing = KINDS[n % len(KINDS)]
    jobs = [Step("crash.do", {"job": j, "fail": failing and j == 2}) for j in range(3)]
    locks = {f"vm/v{n % 7}": "exclusive"}  # tasks share VMs: locks serialise them
    tid = await engine.submit(
        "crash", jobs=jobs, tag=f"n:{n}", recovery=policy, clean="manual", locks=locks
    )
    effects.write(SUBMITTED_SQL, tid, n)
    info = await engine.wait(tid)
    if n % len(KINDS) == 4 and info.state is TaskState.FINISHED:
        await engine.rollback(tid)
    elif info.state is TaskState.WAITRECOVER and random.random() < 0.5:
        await engine.rollback(tid)


async def main(url: str, seed: int, mode: str) -> None:
    random.seed(seed)
    effects = Effects(url)
    store = await open_store(url, migrate=False)
    engine = TaskEngine(store, LockManager(), registry(effects), max_running=8)
    await engine.start()
    if mode == "finish":
        for info in engine.list(state="waitrecover"):
            await engine.rollback(info.id)
        for info in engine.list():
            await engine.wait(info.id)
        for info in engine.list(state="waitrecover"):
            await engine.rollback(info.id)
            await engine.wait(info.id)
        await engine.close()
        await store.close()
        return
    print("ready", flush=True)
    rows = await store.tasks.list()
    n = 1 + max((int(r.tag.split(":")[1]) for r in rows), default=0)
    running: set[asyncio.Task[None]] = set()
    while True:
        while len(running) < 16:
            job = asyncio.ensure_future(submit_one(engine, effects, n))
            running.add(job)
            job.add_done_callback(running.discard)
            n += 1
        await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3]))
