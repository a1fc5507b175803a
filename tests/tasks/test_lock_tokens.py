"""A job and its recovery read the fencing tokens of their task's grant (``JobContext.lock_token``):
the token the lock manager issued for each key the task holds, ``None`` for any other key. The
controller's VM steps pass that token with their writes (issue 11)."""

from __future__ import annotations

from corral import exceptions
from corral.locks import LockManager
from corral.store import open_store
from corral.store.types import JSON
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState


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
