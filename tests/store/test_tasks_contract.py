"""Contract of the tasks repository, identical for every store implementation."""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.store import Store
from corral.store.tasks import (
    DeleteTask,
    InsertTask,
    PopRecoveries,
    PushRecovery,
    RecoveryRow,
    TaskProgress,
    TaskRow,
    UpdateTask,
)


def progress(state: str = "preparing", jobs_done: int = 0, t: float = 1.0) -> TaskProgress:
    return TaskProgress(state, jobs_done, "", "", "null", t)


def row(tid: str, *, tag: str = "t", state: str = "preparing", created: float = 1.0) -> TaskRow:
    return TaskRow(
        id=tid,
        verb="spawn",
        tag=tag,
        priority="medium",
        recovery="auto",
        persist="auto",
        clean="manual",
        locks='{"vm/a": "exclusive"}',
        jobs='[{"name": "j", "args": {}}]',
        created_at=created,
        progress=progress(state, t=created),
    )


def rec(tid: str, pos: int, name: str = "r") -> RecoveryRow:
    return RecoveryRow(tid, pos, name, f'{{"n": {pos}}}')


async def test_insert_then_get_returns_the_same_task(store: Store) -> None:
    r = row("a")
    await store.tasks.apply([InsertTask(r), PushRecovery(rec("a", 0))])
    got = await store.tasks.get("a")
    assert got is not None
    assert got.row == r
    assert got.recoveries == (rec("a", 0),)
    assert await store.tasks.get("missing") is None


async def test_update_overwrites_progress_only(store: Store) -> None:
    await store.tasks.apply([InsertTask(row("a"))])
    new = TaskProgress("running", 2, "backend_error", "running job 3 of 3", '{"x": [1, 2]}', 5.5)
    await store.tasks.apply([UpdateTask("a", new)])
    got = await store.tasks.get("a")
    assert got is not None
    assert got.row.progress == new
    assert got.row.verb == "spawn"


async def test_recovery_stack_push_pop_replace(store: Store) -> None:
    await store.tasks.apply([InsertTask(row("a"))])
    await store.tasks.apply([PushRecovery(rec("a", i, f"r{i}")) for i in range(4)])
    await store.tasks.apply([PopRecoveries("a", 3)])
    got = await store.tasks.get("a")
    assert got is not None
    assert [r.name for r in got.recoveries] == ["r0", "r1", "r2"]
    # replace back to position 1 with one coarser recovery, in one transaction
    await store.tasks.apply([PopRecoveries("a", 1), PushRecovery(rec("a", 1, "coarse"))])
    got = await store.tasks.get("a")
    assert got is not None
    assert [(r.position, r.name) for r in got.recoveries] == [(0, "r0"), (1, "coarse")]


async def test_failed_apply_changes_nothing(store: Store) -> None:
    await store.tasks.apply([InsertTask(row("a"))])
    with pytest.raises(exceptions.TaskNotFound):
        await store.tasks.apply(
            [UpdateTask("a", progress("running")), UpdateTask("nope", progress("running"))]
        )
    with pytest.raises(exceptions.Conflict):
        await store.tasks.apply([PushRecovery(rec("a", 0)), InsertTask(row("a"))])
    with pytest.raises(exceptions.TaskNotFound):
        await store.tasks.apply([PushRecovery(rec("missing", 0))])
    with pytest.raises(exceptions.TaskNotFound):
        await store.tasks.apply([PopRecoveries("missing", 0)])
    got = await store.tasks.get("a")
    assert got is not None
    assert got.row.progress.state == "preparing"
    assert got.recoveries == ()


async def test_duplicate_recovery_position_is_a_conflict(store: Store) -> None:
    await store.tasks.apply([InsertTask(row("a")), PushRecovery(rec("a", 0))])
    with pytest.raises(exceptions.Conflict):
        await store.tasks.apply([PushRecovery(rec("a", 0, "other"))])
    got = await store.tasks.get("a")
    assert got is not None and [r.name for r in got.recoveries] == ["r"]


async def test_delete_forgets_task_and_recoveries(store: Store) -> None:
    await store.tasks.apply([InsertTask(row("a")), PushRecovery(rec("a", 0)), InsertTask(row("b"))])
    await store.tasks.apply([DeleteTask("a"), DeleteTask("never-existed")])
    assert await store.tasks.get("a") is None
    assert [s.row.id for s in await store.tasks.load_all()] == ["b"]
    # the id may be reused after deletion, with an empty stack
    await store.tasks.apply([InsertTask(row("a", created=3.0))])
    got = await store.tasks.get("a")
    assert got is not None and got.recoveries == ()


async def test_list_filters_by_state_and_tag_oldest_first(store: Store) -> None:
    await store.tasks.apply(
        [
            InsertTask(row("c", tag="pool:x", state="running", created=3.0)),
            InsertTask(row("a", tag="pool:x", state="queued", created=1.0)),
            InsertTask(row("b", tag="pool:y", state="running", created=2.0)),
            InsertTask(row("d", tag="pool:x", state="running", created=2.0)),
        ]
    )
    assert [r.id for r in await store.tasks.list()] == ["a", "b", "d", "c"]
    assert [r.id for r in await store.tasks.list(state="running")] == ["b", "d", "c"]
    assert [r.id for r in await store.tasks.list(tag="pool:x")] == ["a", "d", "c"]
    assert [r.id for r in await store.tasks.list(state="running", tag="pool:x")] == ["d", "c"]
    assert await store.tasks.list(state="failed") == []


async def test_load_all_returns_every_stack(store: Store) -> None:
    await store.tasks.apply(
        [
            InsertTask(row("a", created=1.0)),
            InsertTask(row("b", created=2.0)),
            PushRecovery(rec("b", 0, "x")),
            PushRecovery(rec("b", 1, "y")),
        ]
    )
    loaded = await store.tasks.load_all()
    assert [(s.row.id, [r.name for r in s.recoveries]) for s in loaded] == [
        ("a", []),
        ("b", ["x", "y"]),
    ]


async def test_concurrent_writers_all_commit(store: Store) -> None:
    """Many tasks writing at once (group commit in SQL stores) each see only their own outcome."""

    async def one(i: int) -> None:
        tid = f"t{i:03d}"
        await store.tasks.apply([InsertTask(row(tid, created=float(i)))])
        await store.tasks.apply([PushRecovery(rec(tid, 0))])
        if i % 5 == 0:  # some units fail inside the same batches as good ones
            with pytest.raises(exceptions.Conflict):
                await store.tasks.apply([PushRecovery(rec(tid, 0))])
        await store.tasks.apply([UpdateTask(tid, progress("finished", 1))])

    await asyncio.gather(*(one(i) for i in range(60)))
    loaded = await store.tasks.load_all()
    assert len(loaded) == 60
    assert all(s.row.progress.state == "finished" and len(s.recoveries) == 1 for s in loaded)
