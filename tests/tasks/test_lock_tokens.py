"""A job and its recovery read the fencing tokens of their task's grant (``JobContext.lock_token``):
the token the lock manager issued for each key the task holds, ``None`` for any other key. The
controller's VM steps pass that token with their writes (issue 11)."""

from __future__ import annotations

from corral import exceptions
from corral.locks import LockManager
from corral.store import open_store
from corral.store.types import JSON
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState

from .conftest import EngineFactory


async def test_a_job_and_its_recovery_read_their_grants_tokens() -> None:
    """Breakages caught: the engine not keeping the grant's tokens for its jobs (the steps'
    VM writes then carry no fence at all); a token of another grant, or of a key the task does
    not hold."""
    seen: list[tuple[str, int | None, int | None]] = []
    reg = StepRegistry()

    @reg.job("look")
    async def look(ctx: JobContext, *, fail: bool = False) -> JSON:
        await ctx.push_recovery("undo")
        seen.append(("job", ctx.lock_token("vm/a"), ctx.lock_token("vm/b")))
        if fail:
            raise exceptions.BackendError("failed on purpose")
        return None

    @reg.recovery("undo")
    async def undo(ctx: JobContext) -> JSON:
        seen.append(("undo", ctx.lock_token("vm/a"), ctx.lock_token("vm/b")))
        return None

    locks = LockManager()
    store = await open_store("memory://")
    engine = TaskEngine(store, locks, reg)
    await engine.start()
    try:
        locks_of = {"vm/a": "exclusive"}
        first = await engine.submit("t", jobs=[Step("look", {})], locks=locks_of)
        assert (await engine.wait(first, timeout=30)).state is TaskState.FINISHED
        token = locks.last_token("vm/a")
        assert seen == [("job", token, None)]
        seen.clear()
        second = await engine.submit("t", jobs=[Step("look", {"fail": True})], locks=locks_of)
        assert (await engine.wait(second, timeout=30)).state is TaskState.RECOVERED
        newer = locks.last_token("vm/a")
        assert newer > token
        assert seen == [("job", newer, None), ("undo", newer, None)]
    finally:
        await engine.close()
        await store.close()


async def test_a_job_sees_its_grants_token_and_a_retaken_grant_a_newer_one(
    make_engine: EngineFactory,
) -> None:
    locks = LockManager()
    engine: TaskEngine = await make_engine(locks=locks)
    seen: list[tuple[str, int | None, int | None]] = []
    registry = engine._registry

    @registry.job("token.job")
    async def job(ctx: JobContext) -> None:
        seen.append(("job", ctx.lock_token("vm/x"), ctx.lock_token("vm/other")))
        await ctx.push_recovery("token.undo")

    @registry.recovery("token.undo")
    async def undo(ctx: JobContext) -> None:
        seen.append(("undo", ctx.lock_token("vm/x"), ctx.lock_token("vm/other")))

    earlier = await locks.acquire("vm/x", owner="before", timeout=5)
    first_token = earlier.token("vm/x")
    earlier.release()
    tid = await engine.submit(
        "x", jobs=[Step("token.job")], locks={"vm/x": "exclusive"}, clean="manual"
    )
    assert (await engine.wait(tid, timeout=10)).state is TaskState.FINISHED
    [(_, job_token, other)] = seen
    assert other is None  # a key the task does not hold
    assert job_token is not None and job_token > first_token
    assert job_token == locks.last_token("vm/x")
    await engine.rollback(tid)  # a finished task's rollback takes the lock again
    assert (await engine.wait(tid, timeout=10)).state is TaskState.RECOVERED
    assert seen[1][0] == "undo" and seen[1][2] is None
    assert seen[1][1] is not None and seen[1][1] > job_token
