"""Concurrent operations on one task: one at a time, the other refused and nothing changed.

Two kinds of test: ``gather`` of two operations (on SQLite the first one's commit yields, so
they interleave as two HTTP requests would), and :class:`HeldCommits`, which parks the store's
commits to hold one operation in its await deterministically, on every store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from corral import exceptions
from corral.store import Store
from corral.store.tasks import TaskOp
from corral.tasks import TaskEngine, TaskInfo, TaskState

from .conftest import EngineFactory, World
from .helpers import entered, steps

S = TaskState
MADE = ["make a", "make b", "make c"]
UNDONE_LIFO = ["unmake c", "unmake b", "unmake a"]


class HeldCommits:
    """Wraps the store's task commits: while held, each one parks until released."""

    def __init__(self, store: Store) -> None:
        self._apply = store.tasks.apply
        self._held = False
        self._open = asyncio.Event()
        self.parked = asyncio.Event()

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        if self._held:
            self.parked.set()
            await self._open.wait()
        await self._apply(ops)

    def hold(self) -> None:
        self._held = True
        self._open.clear()
        self.parked.clear()

    async def release(self) -> None:
        self._held = False
        self._open.set()


@pytest.fixture
def held(store: Store, monkeypatch: pytest.MonkeyPatch) -> HeldCommits:
    commits = HeldCommits(store)
    monkeypatch.setattr(store.tasks, "apply", commits.apply)
    return commits


async def finished(engine: TaskEngine, *, clean: str = "manual") -> str:
    tid = await engine.submit(
        "spawn", jobs=steps("make a", "make b", "make c"), locks={"vm/x": "exclusive"}, clean=clean
    )
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    return tid


async def recovered_once_in_lifo(engine: TaskEngine, world: World, store: Store, tid: str) -> None:
    info = await engine.wait(tid, timeout=10)
    assert (info.state, info.recoveries) == (S.RECOVERED, ())
    assert world.log == MADE + UNDONE_LIFO
    row = await store.tasks.get(tid)
    assert row is not None and row.row.progress.state == "recovered" and row.recoveries == ()


def split(results: list[object]) -> tuple[list[object], list[BaseException]]:
    errors = [r for r in results if isinstance(r, BaseException)]
    return [r for r in results if not isinstance(r, BaseException)], errors


async def test_two_concurrent_rollbacks_run_each_recovery_once(
    engine: TaskEngine, world: World, store: Store
) -> None:
    tid = await finished(engine)
    results = await asyncio.wait_for(
        asyncio.gather(engine.rollback(tid), engine.rollback(tid), return_exceptions=True), 10
    )
    ok, errors = split(results)
    assert len(ok) == 1 and isinstance(ok[0], TaskInfo) and ok[0].state is S.RACQUIRING
    assert len(errors) == 1 and isinstance(errors[0], exceptions.TaskStateTransitionError)
    await recovered_once_in_lifo(engine, world, store, tid)


async def test_rollback_while_another_commits_is_refused_at_once(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await finished(engine)
    held.hold()
    first = asyncio.ensure_future(engine.rollback(tid))
    await entered(held.parked)
    assert engine.show(tid).state is S.RACQUIRING
    with pytest.raises(exceptions.TaskStateTransitionError, match="racquiring to racquiring"):
        await asyncio.wait_for(engine.rollback(tid), 5)
    with pytest.raises(exceptions.TaskNotDone):
        await asyncio.wait_for(engine.clean(tid), 5)
    await held.release()
    assert (await asyncio.wait_for(first, 10)).state is S.RACQUIRING
    await recovered_once_in_lifo(engine, world, store, tid)


async def test_rollback_cancelled_during_its_commit_still_rolls_back(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await finished(engine)
    held.hold()
    rolling = asyncio.ensure_future(engine.rollback(tid))
    await entered(held.parked)
    rolling.cancel()
    with pytest.raises(asyncio.CancelledError):
        await rolling
    await held.release()
    await recovered_once_in_lifo(engine, world, store, tid)


@pytest.mark.parametrize("clean_first", [True, False], ids=["clean-first", "rollback-first"])
async def test_rollback_concurrent_with_clean_one_wins(
    engine: TaskEngine, world: World, store: Store, clean_first: bool
) -> None:
    tid = await finished(engine)
    ops = [engine.clean(tid), engine.rollback(tid)]
    results = await asyncio.wait_for(
        asyncio.gather(*(ops if clean_first else ops[::-1]), return_exceptions=True), 10
    )
    ok, errors = split(results)
    assert len(ok) == 1 and len(errors) == 1
    assert isinstance(
        errors[0],
        exceptions.TaskStateTransitionError | exceptions.TaskNotDone | exceptions.TaskNotFound,
    )
    if ok[0] is None:  # clean won: nothing rolled back, nothing left anywhere
        assert world.log == MADE
        assert engine.list() == [] and await store.tasks.get(tid) is None
        with pytest.raises(exceptions.TaskNotFound):
            engine.show(tid)
    else:
        await recovered_once_in_lifo(engine, world, store, tid)


async def test_rollback_refused_while_clean_commits(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await finished(engine)
    held.hold()
    cleaning = asyncio.ensure_future(engine.clean(tid))
    await entered(held.parked)
    with pytest.raises(exceptions.TaskBusy, match="rollback refused, a clean of it"):
        await asyncio.wait_for(engine.rollback(tid), 5)
    await held.release()
    await asyncio.wait_for(cleaning, 10)
    assert world.log == MADE
    assert engine.list() == [] and await store.tasks.get(tid) is None


async def waitrecover_settling(engine: TaskEngine, world: World, held: HeldCommits) -> str:
    """A manual-recovery task that failed and whose driver is parked committing waitrecover."""
    tid = await engine.submit(
        "spawn",
        jobs=steps("make a", "hold b", "boom"),
        locks={"vm/x": "exclusive"},
        recovery="manual",
        clean="manual",
    )
    await entered(world.was_entered("b"))
    held.hold()
    world.gate("b").set()
    await entered(held.parked)
    assert engine.show(tid).state is S.WAITRECOVER
    return tid


@pytest.mark.parametrize("rollback_first", [True, False], ids=["rollback-first", "stop-first"])
async def test_rollback_concurrent_with_force_stop_one_wins(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits, rollback_first: bool
) -> None:
    tid = await waitrecover_settling(engine, world, held)
    ops = [engine.rollback(tid), engine.stop(tid, force=True)]
    # both start while the driver is still settling; the release runs once both have
    results = await asyncio.wait_for(
        asyncio.gather(
            *(ops if rollback_first else ops[::-1]), held.release(), return_exceptions=True
        ),
        10,
    )
    first, second, _ = results
    assert isinstance(first, TaskInfo), first
    assert isinstance(second, exceptions.TaskBusy), second
    info = await engine.wait(tid, timeout=10)
    made = ["make a", "hold b", "held b", "boom boom"]
    if rollback_first:
        assert info.state is S.RECOVERED
        assert world.log == [*made, "unmake b", "unmake a"]
    else:
        assert info.state is S.FAILED
        assert world.log == made
    row = await store.tasks.get(tid)
    assert row is not None and row.row.progress.state == info.state.value


async def test_force_stop_while_rollback_commits_ends_failed(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await finished(engine)
    held.hold()
    rolling = asyncio.ensure_future(engine.rollback(tid))
    await entered(held.parked)
    assert (await engine.stop(tid, force=True)).state is S.RACQUIRING  # accepted: in recovery
    await held.release()
    assert (await asyncio.wait_for(rolling, 10)).state is S.RACQUIRING
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FAILED and world.log == MADE
    assert info.recoveries == ("unmake", "unmake", "unmake")


async def clean_auto_settling(engine: TaskEngine, world: World, held: HeldCommits) -> str:
    """A clean-``auto`` task that finished and whose driver is parked deleting its record."""
    tid = await engine.submit("spawn", jobs=steps("make a", "hold b"), clean="auto")
    await entered(world.was_entered("b"))
    held.hold()
    world.gate("b").set()
    await entered(held.parked)
    assert engine.show(tid).state is S.FINISHED
    return tid


async def test_rollback_of_a_clean_auto_task_while_it_settles_is_refused(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await clean_auto_settling(engine, world, held)
    rolled, _ = await asyncio.wait_for(
        asyncio.gather(engine.rollback(tid), held.release(), return_exceptions=True), 10
    )
    assert isinstance(rolled, exceptions.TaskNotFound), rolled
    assert world.log == ["make a", "hold b", "held b"]
    assert engine.show(tid).state is S.FINISHED  # still answered from the recent ones
    assert engine.list() == [] and await store.tasks.get(tid) is None


async def test_clean_of_a_clean_auto_task_while_it_settles(
    engine: TaskEngine, world: World, held: HeldCommits
) -> None:
    tid = await clean_auto_settling(engine, world, held)
    cleaned, _ = await asyncio.wait_for(
        asyncio.gather(engine.clean(tid), held.release(), return_exceptions=True), 10
    )
    assert cleaned is None
    with pytest.raises(exceptions.TaskNotFound):
        engine.show(tid)


async def test_two_concurrent_force_stops_start_one_driver(
    engine: TaskEngine, world: World, store: Store, held: HeldCommits
) -> None:
    tid = await waitrecover_settling(engine, world, held)
    first, second, _ = await asyncio.wait_for(
        asyncio.gather(
            engine.stop(tid, force=True),
            engine.stop(tid, force=True),
            held.release(),
            return_exceptions=True,
        ),
        10,
    )
    assert isinstance(first, TaskInfo) and first.state is S.RABORTING
    assert isinstance(second, exceptions.TaskBusy)
    assert (await engine.wait(tid, timeout=10)).state is S.FAILED


async def test_submit_refused_when_the_engine_closes_during_its_commit(
    make_engine: EngineFactory, world: World, held: HeldCommits
) -> None:
    engine = await make_engine()
    held.hold()
    # clean manual: submit commits the task before it returns (clean auto defers the insert)
    submitting = asyncio.ensure_future(engine.submit("spawn", jobs=steps("make a"), clean="manual"))
    await entered(held.parked)
    await engine.close()
    await held.release()
    with pytest.raises(exceptions.TaskError, match="closed while task"):
        await asyncio.wait_for(submitting, 10)
    assert world.log == []  # no job ran on the closed engine
    (task,) = engine.list()
    successor = await make_engine()  # the committed task is recovered: stopped before it ran
    info = await successor.wait(task.id, timeout=10)
    assert info.state is S.RECOVERED and world.log == []
