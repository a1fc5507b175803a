"""How the controller is put together: the backend guard per pool, the store view of a
secondary controller, and input checks shared by the facade. Must not hold state.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence

from corral import exceptions
from corral.backends.base import Backend
from corral.backends.guard import GuardedBackend
from corral.pools.config import PoolConfig
from corral.store import Store
from corral.store.tasks import StoredTask, TaskOp, TaskRepository, TaskRow

MAX_OWNER = 255
MAX_PRIORITY = 1_000_000
MAX_TTL = 7 * 24 * 3600.0


def guard(
    pool: PoolConfig, backend: Backend, *, poll_interval: float | None = None
) -> GuardedBackend:
    """Wrap a pool's backend with the pool's timeouts and concurrency bound."""
    return GuardedBackend(
        backend,
        call_timeout=pool.call_timeout,
        timeouts={"spawn": pool.spawn_timeout, "terminate": pool.terminate_timeout},
        max_concurrency=pool.backend_concurrency or pool.max_starting + 8,
        poll_interval=poll_interval if poll_interval is not None else pool.poll_interval,
    )


class FreshTasks:
    """The tasks repository as a process that must not recover anybody's tasks sees it."""

    def __init__(self, repo: TaskRepository) -> None:
        self._repo = repo

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        await self._repo.apply(ops)

    async def get(self, task_id: str) -> StoredTask | None:
        return await self._repo.get(task_id)

    async def list(
        self, *, state: str | None = None, tag: str | None = None
    ) -> builtins.list[TaskRow]:
        return await self._repo.list(state=state, tag=tag)

    async def load_all(self) -> builtins.list[StoredTask]:
        return []


def without_recovery(store: Store) -> Store:
    return Store(url=store.url, tasks=FreshTasks(store.tasks), pools=store.pools, keys=store.keys)


def check_text(value: object, what: str, *, limit: int = 255) -> str:
    if not isinstance(value, str) or not value or len(value) > limit or not value.isprintable():
        raise exceptions.InvalidInput(f"{what} must be 1 to {limit} printable characters")
    return value


def check_ticket_input(
    owner: object,
    pool: object,
    tags: object,
    sandbox: object,
    priority: object,
    ttl: object,
) -> None:
    """Refuse a malformed ticket request with ``InvalidInput`` naming the bad field."""
    check_text(owner, "owner", limit=MAX_OWNER)
    if pool is not None:
        check_text(pool, "pool", limit=64)
    if isinstance(tags, str) or not isinstance(tags, Sequence | set | frozenset):
        raise exceptions.InvalidInput("tags must be a list of non-empty strings")
    if not all(isinstance(t, str) and t for t in tags):
        raise exceptions.InvalidInput("tags must be a list of non-empty strings")
    if sandbox is not None:
        check_text(sandbox, "sandbox")
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > MAX_PRIORITY:
        raise exceptions.InvalidInput(f"priority must be an integer within ±{MAX_PRIORITY}")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL
    ):
        raise exceptions.InvalidInput(f"ttl must be a number of seconds in (0, {MAX_TTL:g}]")
