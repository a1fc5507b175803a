"""The task engine asks a lock manager that can (``covers_grants``) for grants made durable by
the task's own next commit (issue 11): only for tasks it persists, only on the hot path."""

from __future__ import annotations

from typing import Any

from corral.locks import LockManager
from corral.store import open_store
from corral.tasks import JobContext, Step, StepRegistry, TaskEngine, TaskState
from corral.types import JSON


class _Recording:
    """The in-process manager, claiming ``covers_grants`` and recording what it was asked."""

    covers_grants = True

    def __init__(self) -> None:
        self.inner = LockManager()
        self.durable: list[bool] = []

    def acquire(self, *keys: Any, durable: bool = True, **kw: Any) -> Any:
        self.durable.append(durable)
        return self.inner.acquire(*keys, **kw)


def _registry() -> StepRegistry:
    registry = StepRegistry()

    @registry.job("t.job")
    async def job(ctx: JobContext, *, i: int) -> JSON:
        await ctx.push_recovery("t.undo", i=i)
        return i

    @registry.recovery("t.undo")
    async def undo(ctx: JobContext, *, i: int) -> JSON:
        return None

    return registry


async def _run(persist: str, locks: Any) -> None:
    store = await open_store("memory://")
    engine = TaskEngine(store, locks, _registry())
    await engine.start()
    try:
        task = await engine.submit(
            "t", jobs=[Step("t.job", {"i": 1})], locks={"vm/a": "exclusive"}, persist=persist
        )
        assert (await engine.wait(task, 30)).state is TaskState.FINISHED
    finally:
        await engine.close()
        await store.close()


async def test_persisted_task_asks_for_a_covered_grant() -> None:
    """Breakage caught: the driver not passing ``covered`` (every grant pays its own fsync)."""
    locks = _Recording()
    await _run("auto", locks)
    assert locks.durable == [False]


async def test_unpersisted_task_asks_for_a_durable_grant() -> None:
    """Breakage caught: a task with no commit of its own (persist none) taking a grant that
    nothing would make durable."""
    locks = _Recording()
    await _run("none", locks)
    assert locks.durable == [True]


async def test_managers_without_covered_grants_are_asked_as_before() -> None:
    """Breakage caught: ``durable`` passed to a manager that does not take it (TypeError)."""
    await _run("auto", LockManager())
