"""Crash tests: a child runs a stream of tasks and is killed with SIGKILL, again and again.

After every kill the next child's fresh engine recovers what the store holds; at the end a
final engine settles everything. The checks read the database directly: every task is done as
SPEC §4 allows, every job that acted was undone unless its task finished, and no task was lost
or duplicated.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from corral.store import migrate, parse

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("crash_child.py")
KILLS = int(os.environ.get("CORRAL_CRASH_KILLS", "50"))


def spawn(url: str, seed: int, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this tree, whatever is installed
    return subprocess.Popen(
        [sys.executable, str(CHILD), url, str(seed), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )


def wait_ready(proc: subprocess.Popen[str], timeout: float = 30.0) -> None:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout):
            proc.kill()
            raise AssertionError(f"child not ready within {timeout}s")
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.wait()
        raise AssertionError(
            f"child failed to start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
        )


def kill_repeatedly(url: str, kills: int, rng: random.Random) -> None:
    for i in range(kills):
        proc = spawn(url, seed=rng.randrange(1 << 30), mode="run")
        if i % 5 == 0:
            time.sleep(rng.uniform(0.3, 0.9))  # sometimes while it starts and recovers
        else:
            wait_ready(proc)
            time.sleep(rng.uniform(0.0, 0.3))  # the random moment of the kill
        proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, (
            f"child died by itself ({proc.returncode}): {err}"
        )


def finish(url: str) -> None:
    proc = spawn(url, seed=0, mode="finish")
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err


def query(url: str, sql: str) -> list[tuple[Any, ...]]:
    parsed = parse(url)
    if parsed.kind == "sqlite":
        assert parsed.path is not None
        with sqlite3.connect(parsed.path) as conn:
            return list(conn.execute(sql))
    import psycopg

    with psycopg.connect(url) as conn:
        return list(conn.execute(sql))


def check(url: str) -> None:
    tasks = query(url, "SELECT id, tag, state, message, jobs_done FROM tasks")
    stacks = dict(query(url, "SELECT task_id, count(*) FROM task_recoveries GROUP BY task_id"))
    submitted = {row[0] for row in query(url, "SELECT task_id FROM crash_submitted")}
    effects: dict[str, dict[str, set[int]]] = defaultdict(lambda: {"do": set(), "undo": set()})
    for task_id, job, kind in query(url, "SELECT task_id, job, kind FROM crash_effects"):
        effects[task_id][kind].add(job)

    ids = {t[0] for t in tasks}
    tags = [t[1] for t in tasks]
    assert len(tags) == len(set(tags)), "a submission was duplicated"
    assert submitted <= ids, f"tasks lost: {submitted - ids}"
    assert set(effects) <= ids, "side effects of a task the store does not know"
    states = defaultdict(int)
    restarted = 0
    for task_id, tag, state, message, jobs_done in tasks:
        states[state] += 1
        # recoveries never fail and nobody force-stops here: every task ends finished or recovered
        assert state in ("finished", "recovered"), (task_id, tag, state, message)
        done = effects[task_id]
        n = int(tag.split(":")[1])
        if state == "finished":
            assert done["do"] == {0, 1, 2} and not done["undo"], (tag, done)
            assert jobs_done == 3
            assert n % 5 not in (1, 2), f"a failing task finished: {tag}"
        else:
            assert done["do"] <= done["undo"], f"{tag}: done but never undone: {done}"
            assert stacks.get(task_id, 0) == 0
        restarted += "restart" in message
    assert states["finished"] > 0 and states["recovered"] > 0, states
    assert restarted > 0, "no kill ever interrupted a task: the test proves nothing"
    print(f"{len(tasks)} tasks, {dict(states)}, {restarted} recovered after a restart")


def run_crash_suite(url: str) -> None:
    migrate.upgrade(url)
    rng = random.Random(int(os.environ.get("CORRAL_CRASH_SEED", "20261121")))
    kill_repeatedly(url, KILLS, rng)
    finish(url)
    check(url)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sqlite_survives_repeated_kill_9(tmp_path: Path) -> None:
    run_crash_suite(f"sqlite:///{tmp_path / 'crash.db'}")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(240)
def test_postgresql_survives_repeated_kill_9(pg_url: str) -> None:
    run_crash_suite(pg_url)
