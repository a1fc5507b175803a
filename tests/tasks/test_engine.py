"""Engine scenarios (issue 3), on the memory, SQLite and PostgreSQL stores."""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.locks import LockManager
from corral.store import Store
from corral.tasks import JobContext, Step, TaskEngine, TaskEvent, TaskState

from .conftest import EngineFactory, World, make_registry
from .helpers import entered, steps, until

S = TaskState


async def test_three_jobs_finish_with_the_last_result(engine: TaskEngine, world: World) -> None:
    jobs = [Step("make", {"name": f"j{i}", "value": {"n": i}}) for i in range(3)]
    tid = await engine.submit("spawn", jobs=jobs, tag="pool:x")
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FINISHED
    assert info.result == {"n": 2}
    assert (info.code, info.message) == ("ok", "3 jobs completed successfully")
    assert (info.jobs_done, info.jobs_total, info.tag, info.verb) == (3, 3, "pool:x", "spawn")
    assert world.log == ["make j0", "make j1", "make j2"]


async def test_show_says_running_job_i_of_n(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "hold b", "make c"))
    await entered(world.was_entered("b"))
    info = engine.show(tid)
    assert info.state is S.RUNNING
    assert info.message == "running job 2 of 3"
    assert (info.jobs_done, info.jobs_total) == (1, 3)
    assert info.recoveries == ("unmake", "unmake")
    assert [t.id for t in engine.list(state="running")] == [tid]
    world.gate("b").set()
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED


async def test_failure_under_auto_runs_recoveries_in_reverse(
    engine: TaskEngine, world: World
) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "make b", "boom", "make never"))
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert info.code == "backend_error"
    assert "job 3 of 4 (boom) failed: boom exploded" in info.message
    assert world.log == ["make a", "make b", "boom boom", "unmake b", "unmake a"]
    assert info.recoveries == ()


async def test_failure_under_manual_waits_for_rollback(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "boom"), recovery="manual")
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.WAITRECOVER
    assert world.log == ["make a", "boom boom"]
    assert [t.id for t in engine.list(state="waitrecover")] == [tid]
    started = await engine.rollback(tid)
    assert started.state is S.RACQUIRING
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert world.log[-1] == "unmake a"


async def test_failure_under_none_ends_failed_without_rollback(
    engine: TaskEngine, world: World
) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "boom"), recovery="none")
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FAILED and info.code == "backend_error"
    assert world.log == ["make a", "boom boom"]


async def test_failing_recovery_ends_failed_with_the_error(
    engine: TaskEngine, world: World
) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "make-bad-undo b", "make c", "boom"))
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FAILED
    assert info.code == "backend_error"
    assert info.message == "recovery bad-unmake failed: cannot unmake b"
    assert world.log[-2:] == ["unmake c", "bad-unmake b"]  # a's recovery is not attempted
    assert info.recoveries == ("unmake", "bad-unmake")


async def test_stop_while_running_aborts_and_rolls_back(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "hold b", "make c"))
    await entered(world.was_entered("b"))
    await engine.stop(tid)
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert info.code == "task_aborted"
    assert world.log == ["make a", "hold b", "unmake b", "unmake a"]  # never "held b"


async def test_stop_during_recovery_needs_force(engine: TaskEngine, world: World) -> None:
    jobs = steps("make a", "make-slow-undo x", "boom")
    tid = await engine.submit("spawn", jobs=jobs, clean="manual")
    await entered(world.was_entered("undo x"))
    ignored = await engine.stop(tid)
    assert ignored.state is S.RECOVERING
    await engine.stop(tid, force=True)
    world.gate("undo x").set()
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FAILED
    assert "unmake a" not in world.log  # the rollback was aborted after the running recovery
    assert info.recoveries == ("unmake",)


async def test_force_stop_in_waitrecover_fails_the_task(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "boom"), recovery="manual")
    assert (await engine.wait(tid, timeout=10)).state is S.WAITRECOVER
    assert (await engine.stop(tid)).state is S.WAITRECOVER  # without force: ignored
    await engine.stop(tid, force=True)
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FAILED
    assert "unmake a" not in world.log


async def test_rollback_of_a_finished_task(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("make a", "make b"), clean="manual")
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    await engine.rollback(tid)
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.RECOVERED
    assert world.log[-2:] == ["unmake b", "unmake a"]
    with pytest.raises(exceptions.TaskStateTransitionError, match="recovered to racquiring"):
        await engine.rollback(tid)


async def test_rollback_refused_while_running(engine: TaskEngine, world: World) -> None:
    tid = await engine.submit("spawn", jobs=steps("hold a"))
    await entered(world.was_entered("a"))
    with pytest.raises(exceptions.TaskStateTransitionError, match="running to racquiring"):
        await engine.rollback(tid)
    world.gate("a").set()
    await engine.wait(tid, timeout=10)


async def test_sentinel_replace_keeps_one_coarse_recovery(
    engine: TaskEngine, world: World, store: Store
) -> None:
    tid = await engine.submit(
        "spawn", jobs=steps("make a", "sentinel-then-coarse n"), clean="manual"
    )
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FINISHED and info.recoveries == ("unmake", "unmake")
    stored = await store.tasks.get(tid)
    assert stored is not None
    assert [(r.position, r.args) for r in stored.recoveries] == [
        (0, '{"name":"a"}'),
        (1, '{"name":"n.all"}'),
    ]
    await engine.rollback(tid)
    await engine.wait(tid, timeout=10)
    assert world.log[-2:] == ["unmake n.all", "unmake a"]


async def test_priorities_order_the_queue(make_engine: EngineFactory, world: World) -> None:
    engine = await make_engine(max_running=1)
    first = await engine.submit("x", jobs=steps("hold first"), priority="low")
    await entered(world.was_entered("first"))
    ids = [
        await engine.submit("x", jobs=steps(f"make {name}"), priority=prio)
        for name, prio in [("L", "low"), ("M1", "medium"), ("H", "high"), ("M2", "medium")]
    ]
    await until(lambda: all(engine.show(t).state is S.QUEUED for t in ids))
    world.gate("first").set()
    for tid in [first, *ids]:
        assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    assert [e for e in world.log if e.startswith("make")] == [
        "make H",
        "make M1",
        "make M2",
        "make L",
    ]


async def test_locks_serialise_two_tasks_on_one_vm(engine: TaskEngine, world: World) -> None:
    await engine.submit("x", jobs=steps("hold a"), locks={"vm/x": "exclusive"})
    await entered(world.was_entered("a"))
    b = await engine.submit(
        "x", jobs=steps("make b"), locks={"vm/x": "exclusive", "pool/p": "shared"}
    )
    c = await engine.submit(
        "x", jobs=steps("make c"), locks={"vm/y": "exclusive", "pool/p": "shared"}
    )
    await until(lambda: engine.show(b).state is S.BLOCKED)
    assert (await engine.wait(c, timeout=10)).state is S.FINISHED  # another VM is not held up
    assert "make b" not in world.log
    world.gate("a").set()
    assert (await engine.wait(b, timeout=10)).state is S.FINISHED
    assert world.log.index("held a") < world.log.index("make b")


async def test_bad_input_is_refused_and_changes_nothing(engine: TaskEngine, store: Store) -> None:
    bad_calls = [
        ({"jobs": [Step("nope")]}, exceptions.UnknownStep),
        ({"jobs": [Step("make", {"name": object()})]}, exceptions.InvalidInput),  # type: ignore[dict-item]
        ({"jobs": ["make"]}, exceptions.InvalidInput),
        ({"priority": "urgent"}, exceptions.InvalidInput),
        ({"recovery": "maybe"}, exceptions.InvalidInput),
        ({"persist": "sometimes"}, exceptions.InvalidInput),
        ({"clean": "never"}, exceptions.InvalidInput),
        ({"locks": {"not a key": "exclusive"}}, exceptions.InvalidInput),
        ({"locks": {"vm/a": "mine"}}, exceptions.InvalidInput),
        ({"tag": 5}, exceptions.InvalidInput),
    ]
    for kwargs, error in bad_calls:
        kwargs.setdefault("jobs", steps("make a"))
        with pytest.raises(error):
            await engine.submit("spawn", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(exceptions.InvalidInput, match="verb"):
        await engine.submit("", jobs=steps("make a"))
    assert engine.list() == []
    assert await store.tasks.list() == []


async def test_unknown_ids_timeouts_and_clean(
    engine: TaskEngine, world: World, store: Store
) -> None:
    for call in (
        engine.wait("nope"),
        engine.stop("nope"),
        engine.rollback("nope"),
        engine.clean("nope"),
    ):
        with pytest.raises(exceptions.TaskNotFound):
            await call
    with pytest.raises(exceptions.TaskNotFound):
        engine.show("nope")
    tid = await engine.submit("x", jobs=steps("hold a"), clean="manual")
    with pytest.raises(exceptions.TaskWaitTimeout):
        await engine.wait(tid, timeout=0.01)
    with pytest.raises(exceptions.TaskNotDone):
        await engine.clean(tid)
    world.gate("a").set()
    await engine.wait(tid, timeout=10)
    stored = await store.tasks.get(tid)
    assert stored is not None and stored.row.progress.state == "finished"
    await engine.clean(tid)
    assert await store.tasks.get(tid) is None
    with pytest.raises(exceptions.TaskNotFound):
        engine.show(tid)


async def test_clean_auto_forgets_the_record_but_wait_still_answers(
    engine: TaskEngine, store: Store
) -> None:
    tid = await engine.submit("x", jobs=steps("make a"))
    info = await engine.wait(tid, timeout=10)
    assert info.state is S.FINISHED
    assert await store.tasks.get(tid) is None
    assert engine.list() == []
    assert engine.show(tid) == info == await engine.wait(tid)
    no_jobs = await engine.submit("x")
    assert engine.show(no_jobs).state is S.FINISHED


async def test_persist_none_writes_nothing(engine: TaskEngine, store: Store) -> None:
    tid = await engine.submit("x", jobs=steps("make a", "boom"), persist="none", clean="manual")
    assert (await engine.wait(tid, timeout=10)).state is S.RECOVERED
    assert await store.tasks.list() == []


async def test_events_follow_the_table_after_each_commit(
    engine: TaskEngine, world: World, store: Store
) -> None:
    seen: list[TaskEvent] = []
    unsubscribe = engine.subscribe(seen.append)
    tid = await engine.submit("x", jobs=steps("make a", "boom"), clean="manual")
    await engine.wait(tid, timeout=10)
    unsubscribe()
    states = [(e.previous.value, e.state.value) for e in seen if e.task_id == tid]
    assert states == [
        ("init", "preparing"),
        ("preparing", "acquiring"),
        ("acquiring", "queued"),
        ("queued", "running"),
        ("running", "aborting"),
        ("aborting", "racquiring"),
        ("racquiring", "recovering"),
        ("recovering", "recovered"),
    ]
    stored = await store.tasks.get(tid)
    assert stored is not None and stored.row.progress.state == seen[-1].info.state.value
    await engine.submit("y", jobs=steps("make b"))
    assert len([e for e in seen if e.task_id != tid]) == 0  # unsubscribed


async def test_submit_needs_a_started_engine_and_close_answers_waiters(
    store: Store, world: World
) -> None:
    engine = TaskEngine(store, LockManager(), make_registry(), deps=world)
    with pytest.raises(exceptions.TaskError, match="start"):
        await engine.submit("x", jobs=steps("make a"))
    await engine.start()
    tid = await engine.submit("x", jobs=steps("hold a"))
    await entered(world.was_entered("a"))
    waiting = asyncio.ensure_future(engine.wait(tid))
    await until(lambda: bool(engine._tasks[tid].waiters))
    await engine.close()
    with pytest.raises(exceptions.TaskError, match="closed"):
        await waiting
    with pytest.raises(exceptions.TaskError):
        await engine.submit("x", jobs=steps("make b"))


async def test_rollback_reacquires_the_locks(make_engine: EngineFactory, world: World) -> None:
    locks = LockManager()
    engine = await make_engine(locks=locks)
    held = {"vm/x": "exclusive"}
    first = await engine.submit("x", jobs=steps("make a"), locks=held, clean="manual")
    second = await engine.submit("x", jobs=steps("make b"), locks=held, clean="manual")
    assert (await engine.wait(first, timeout=10)).state is S.FINISHED
    assert (await engine.wait(second, timeout=10)).state is S.FINISHED
    other = await locks.acquire("vm/x", owner="operator", timeout=5)
    await engine.rollback(first)
    await engine.rollback(second)
    await until(lambda: len(locks.status()[0].queue) == 2)
    assert engine.show(first).state is S.RACQUIRING and "unmake a" not in world.log
    await engine.stop(second, force=True)  # withdraws its lock request
    assert (await engine.wait(second, timeout=10)).state is S.FAILED
    other.release()
    assert (await engine.wait(first, timeout=10)).state is S.RECOVERED
    assert world.log[-1] == "unmake a" and "unmake b" not in world.log
    assert locks.status() == [] or all(not s.holders for s in locks.status())


async def test_a_context_cannot_push_after_its_job_ended(engine: TaskEngine, world: World) -> None:
    kept: list[JobContext] = []
    registry = engine._registry

    @registry.job("leak")
    async def leak(ctx: JobContext) -> None:
        kept.append(ctx)

    tid = await engine.submit("x", jobs=[Step("leak")], clean="manual")
    assert (await engine.wait(tid, timeout=10)).state is S.FINISHED
    with pytest.raises(exceptions.TaskError, match="job has ended"):
        await kept[0].push_recovery("unmake", name="late")
    assert engine.show(tid).recoveries == ()
    with pytest.raises(exceptions.InvalidInput, match="timeout"):
        await engine.wait(tid, timeout=-1)
