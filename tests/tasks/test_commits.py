"""How many transactions a task costs, and that the fewer commits stay write-ahead.

A task with recovery and clean ``auto`` is inserted by its first commit (its first job's recovery
push), not by ``submit``; every other task is committed before ``submit`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from corral import exceptions
from corral.store import Store
from corral.store.tasks import DeleteTask, InsertTask, TaskOp, UpdateTask
from corral.tasks import JobContext, TaskState

from .conftest import EngineFactory, World
from .helpers import entered, steps

S = TaskState


class Recorded:
    """Wraps the store's task commits and records each transaction's operations."""

    def __init__(self, store: Store) -> None:
        self._apply = store.tasks.apply
        self.transactions: list[list[TaskOp]] = []

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        await self._apply(ops)
        self.transactions.append(list(ops))

    def kinds(self) -> list[list[str]]:
        return [[type(op).__name__ for op in ops] for ops in self.transactions]


@pytest.fixture
def recorded(store: Store, monkeypatch: pytest.MonkeyPatch) -> Recorded:
    commits = Recorded(store)
    monkeypatch.setattr(store.tasks, "apply", commits.apply)
    return commits


async def test_an_auto_task_is_inserted_with_its_first_push(
    make_engine: EngineFactory, recorded: Recorded
) -> None:
    engine = await make_engine()
    tid = await engine.submit("spawn", jobs=steps("make a", "make b"))
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    assert recorded.kinds() == [
        ["InsertTask", "PushRecovery"],
        ["UpdateTask", "PushRecovery"],
        ["DeleteTask"],
    ]
    insert = recorded.transactions[0][0]
    assert isinstance(insert, InsertTask)
    assert insert.row.progress.state == "running" and insert.row.progress.jobs_done == 0
    update = recorded.transactions[1][0]
    assert isinstance(update, UpdateTask) and update.progress.jobs_done == 1
    assert isinstance(recorded.transactions[2][0], DeleteTask)


@pytest.mark.parametrize("policies", [{"clean": "manual"}, {"recovery": "resume"}])
async def test_other_tasks_are_committed_before_submit_returns(
    make_engine: EngineFactory, store: Store, recorded: Recorded, policies: dict[str, str]
) -> None:
    engine = await make_engine()
    tid = await engine.submit("spawn", jobs=steps("make a"), **policies)
    stored = await store.tasks.get(tid)
    assert stored is not None and stored.row.progress.state == "preparing"
    assert recorded.kinds()[0] == ["InsertTask"]
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED


async def test_the_first_act_comes_after_the_commit_of_its_undo(
    make_engine: EngineFactory, store: Store, world: World
) -> None:
    seen: list[object] = []
    engine = await make_engine()

    @engine._registry.job("observe")  # a job of this test only
    async def observe(ctx: JobContext) -> None:
        await ctx.push_recovery("unmake", name="x")
        stored = await store.tasks.get(ctx.task_id)  # what a crash right now would leave
        assert stored is not None
        seen.append((stored.row.progress.state, [r.name for r in stored.recoveries]))

    tid = await engine.submit("spawn", jobs=steps("observe"))
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    assert seen == [("running", ["unmake"])]
    assert await store.tasks.get(tid) is None  # clean auto: deleted with its end


async def test_an_auto_task_failing_before_any_push_writes_nothing(
    make_engine: EngineFactory, store: Store, recorded: Recorded, world: World
) -> None:
    engine = await make_engine()
    tid = await engine.submit("spawn", jobs=steps("boom a"))
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED and info.code == "backend_error"
    assert recorded.transactions == [] and await store.tasks.get(tid) is None
    assert world.log == ["boom a"]


async def test_an_uncommitted_auto_task_lost_by_a_restart_left_nothing_to_undo(
    make_engine: EngineFactory, store: Store, world: World
) -> None:
    engine = await make_engine(max_running=1)
    first = await engine.submit("spawn", jobs=steps("hold a"))
    queued = await engine.submit("spawn", jobs=steps("make b"))  # waits for the only slot
    await entered(world.was_entered("a"))
    assert engine.show(queued).state is S.QUEUED
    assert await store.tasks.get(queued) is None  # not durable yet: nothing happened for it
    await engine.close()  # as a crash: what is committed stays
    successor = await make_engine()
    info = await successor.wait(first, timeout=10)
    assert info.state is S.RECOVERED  # the held job's push was committed and is undone
    assert world.log == ["hold a", "unmake a"]  # "make b" never ran, so nothing was lost

    with pytest.raises(exceptions.TaskNotFound):
        successor.show(queued)
