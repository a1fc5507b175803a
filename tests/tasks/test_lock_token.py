"""A job learns the fencing token of its task's lock grant (``JobContext.lock_token``), the
token it hands to a backend that checks fences (issue 11).

Breakages caught: a context that gives no token (or a token of another grant) to the job, a
recovery that took the locks again but reports the old grant's token.
"""

from __future__ import annotations

from corral.locks import LockManager
from corral.tasks import JobContext, TaskEngine, TaskState
from corral.tasks.model import Step

from .conftest import EngineFactory


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
