"""Recover on start (SPEC §4): a fresh engine picks up what the store says, state by state."""

from __future__ import annotations

import json
import uuid

import pytest

from corral import exceptions
from corral.locks import LockManager
from corral.store import Store
from corral.store.tasks import InsertTask, PushRecovery, RecoveryRow, TaskProgress, TaskRow
from corral.tasks import TaskState

from .conftest import EngineFactory, World
from .helpers import entered, steps, until

S = TaskState


async def crashed(
    store: Store,
    state: str,
    *,
    recovery: str = "auto",
    jobs: tuple[str, ...] = ("make a", "make b", "make c"),
    jobs_done: int = 0,
    stack: tuple[str, ...] = (),
    clean: str = "manual",
    locks: dict[str, str] | None = None,
) -> str:
    """Write a task as a killed engine would have left it."""
    tid = str(uuid.uuid4())
    row = TaskRow(
        id=tid,
        verb="spawn",
        tag="t",
        priority="medium",
        recovery=recovery,
        persist="auto",
        clean=clean,
        locks=json.dumps(locks or {}),
        jobs=json.dumps([{"name": s.name, "args": dict(s.args)} for s in steps(*jobs)]),
        created_at=1.0,
        progress=TaskProgress(state, jobs_done, "ok", "running job 1 of 3", "null", 1.0),
    )
    ops: list[InsertTask | PushRecovery] = [InsertTask(row)]
    for i, name in enumerate(stack):
        ops.append(PushRecovery(RecoveryRow(tid, i, "unmake", json.dumps({"name": name}))))
    await store.tasks.apply(ops)
    return tid


@pytest.mark.parametrize("state", ["preparing", "blocked", "acquiring", "queued", "running"])
async def test_abortable_states_are_stopped_and_rolled_back_under_auto(
    store: Store, make_engine: EngineFactory, world: World, state: str
) -> None:
    tid = await crashed(store, state, stack=("a", "b"), jobs_done=1)
    engine = await make_engine()
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert info.code == "task_aborted" and "interrupted by a restart" in info.message
    assert world.log == ["unmake b", "unmake a"]
    stored = await store.tasks.get(tid)
    assert stored is not None and stored.recoveries == ()
    assert stored.row.progress.state == "recovered"


async def test_abortable_under_manual_waits_and_under_none_fails(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    manual = await crashed(store, "running", recovery="manual", stack=("a",))
    none = await crashed(store, "queued", recovery="none", stack=("x",))
    engine = await make_engine()
    assert (await engine.wait(manual, timeout=10)).state is S.WAITRECOVER
    assert (await engine.wait(none, timeout=10)).state is S.FAILED
    assert world.log == []
    await engine.rollback(manual)
    assert (await engine.wait(manual, timeout=10)).state is S.RECOVERED
    assert world.log == ["unmake a"]


async def test_running_under_resume_reruns_the_interrupted_job(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    tid = await crashed(store, "running", recovery="resume", jobs_done=1, stack=("a", "b"))
    engine = await make_engine()
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FINISHED
    assert world.log == ["make b", "make c"]
    assert (info.jobs_done, info.jobs_total) == (3, 3)


async def test_blocked_under_resume_waits_for_its_locks_again(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    locks = LockManager()
    other = await locks.acquire("vm/x", owner="someone", timeout=5)
    tid = await crashed(store, "blocked", recovery="resume", locks={"vm/x": "exclusive"})
    engine = await make_engine(locks=locks)
    await until(lambda: locks.status() != [] and len(locks.status()[0].queue) == 1)
    assert engine.show(tid).state is S.BLOCKED  # still blocked, asking again
    assert world.log == []
    other.release()
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    assert world.log == ["make a", "make b", "make c"]


async def test_waitrecover_keeps_waiting(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    tid = await crashed(store, "waitrecover", recovery="manual", stack=("a",))
    engine = await make_engine()
    assert (await engine.wait(tid, timeout=10)).state is S.WAITRECOVER
    assert world.log == []


@pytest.mark.parametrize("state", ["racquiring", "recovering"])
async def test_recovery_restarts_from_the_persisted_stack(
    store: Store, make_engine: EngineFactory, world: World, state: str
) -> None:
    tid = await crashed(store, state, stack=("a", "b"), locks={"vm/x": "exclusive"})
    engine = await make_engine()
    assert (await engine.wait(tid, timeout=10)).state is S.RECOVERED
    assert world.log == ["unmake b", "unmake a"]


@pytest.mark.parametrize(
    ("state", "recovery", "end", "log"),
    [
        ("aborting", "auto", S.RECOVERED, ["unmake a"]),
        ("aborting", "manual", S.WAITRECOVER, []),
        ("aborting", "none", S.FAILED, []),
        ("raborting", "auto", S.FAILED, []),
    ],
)
async def test_aborting_states_are_driven_to_their_end(
    store: Store,
    make_engine: EngineFactory,
    world: World,
    state: str,
    recovery: str,
    end: S,
    log: list[str],
) -> None:
    tid = await crashed(store, state, recovery=recovery, stack=("a",))
    engine = await make_engine()
    assert (await engine.wait(tid, timeout=10)).state is end
    assert world.log == log


async def test_done_tasks_stay_listed_or_are_cleaned(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    kept = await crashed(store, "finished", stack=("a",))
    gone = await crashed(store, "failed", clean="auto")
    engine = await make_engine()
    assert (await engine.wait(kept, timeout=10)).state is S.FINISHED
    await until(lambda: all(t.id != gone for t in engine.list()))
    assert await store.tasks.get(gone) is None
    await engine.rollback(kept)
    assert (await engine.wait(kept, timeout=10)).state is S.RECOVERED
    assert world.log == ["unmake a"]


async def test_engine_closed_mid_job_is_recovered_by_the_next(
    store: Store, make_engine: EngineFactory, world: World
) -> None:
    first = await make_engine()
    tid = await first.submit("x", jobs=steps("make a", "hold b", "make c"))
    await entered(world.was_entered("b"))
    await first.close()  # like a kill: the job never finishes
    second = await make_engine()
    info = await second.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert world.log == ["make a", "hold b", "unmake b", "unmake a"]


async def test_an_unreadable_stored_task_is_a_store_error(
    store: Store, make_engine: EngineFactory
) -> None:
    await crashed(store, "running", recovery="sometimes")
    with pytest.raises(exceptions.StoreError, match="cannot be read"):
        await make_engine()
