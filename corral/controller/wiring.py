"""How the controller is put together: the backend guard per pool, the store view of a
secondary controller, and input checks shared by the facade. Must not hold state.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from corral import exceptions
from corral.backends.base import Backend
from corral.backends.guard import GuardedBackend
from corral.cluster.service import Membership
from corral.config import CorralConfig
from corral.controller.leadership import Leadership
from corral.controller.takeover import Recoverer, Takeover
from corral.pools.config import PoolConfig
from corral.store import Store
from corral.store import parse as parse_store_url
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


META_KEYS = 16
"""At most this many metadata pairs per ticket."""
META_KEY = re.compile(r"[A-Za-z0-9_.-]{1,64}")
META_VALUE_LIMIT = 256
META_TOTAL = 4096
"""Bytes of metadata (keys and values) per ticket at most."""


def check_meta(meta: object, *, filter_: bool = False) -> dict[str, str]:
    """Validate ticket metadata (or a metadata filter): a small mapping of keys made of
    letters, digits, ``_.-`` to printable strings; ``InvalidInput`` names what is wrong."""
    what = "meta filter" if filter_ else "meta"
    if not isinstance(meta, Mapping):
        raise exceptions.InvalidInput(f"{what} must be a mapping of keys to strings")
    if len(meta) > META_KEYS:
        raise exceptions.InvalidInput(f"{what} has {len(meta)} keys, at most {META_KEYS}")
    total = 0
    for key, value in meta.items():
        if not isinstance(key, str) or not META_KEY.fullmatch(key):
            raise exceptions.InvalidInput(
                f"{what} key {key!r} must be 1-64 letters, digits, '_', '.' or '-'"
            )
        if not isinstance(value, str) or not value.isprintable() or len(value) > META_VALUE_LIMIT:
            raise exceptions.InvalidInput(
                f"{what} value of {key!r} must be printable text of at most "
                f"{META_VALUE_LIMIT} characters"
            )
        total += len(key.encode()) + len(value.encode())
    if total > META_TOTAL:
        raise exceptions.InvalidInput(f"{what} is {total} bytes, at most {META_TOTAL}")
    return dict(meta)


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


class OwnTasks:
    """The tasks repository as a cluster member sees it at start: only the tasks it owns."""

    def __init__(self, repo: TaskRepository, own: set[str]) -> None:
        self._repo = repo
        self._own = own

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        await self._repo.apply(ops)

    async def get(self, task_id: str) -> StoredTask | None:
        return await self._repo.get(task_id)

    async def list(
        self, *, state: str | None = None, tag: str | None = None
    ) -> builtins.list[TaskRow]:
        return await self._repo.list(state=state, tag=tag)

    async def load_all(self) -> builtins.list[StoredTask]:
        return [s for s in await self._repo.load_all() if s.row.id in self._own]


def owning(store: Store, own: set[str]) -> Store:
    """``store`` whose start-up recovery sees only the tasks in ``own``."""
    return Store(
        url=store.url, tasks=OwnTasks(store.tasks, own), pools=store.pools, keys=store.keys
    )


@dataclass
class ClusterParts:
    """This host's membership, the pools it leads, and (shared stores) its takeover duty."""

    member: Membership
    leadership: Leadership
    takeover: Takeover | None
    own: set[str] | None
    """The task ids this host recovers at start (``None``: every task, a single-host store)."""


async def join_cluster(
    config: CorralConfig, store: Store, engine: Callable[[], Recoverer]
) -> ClusterParts:
    """Register this host (PostgreSQL: in the shared database; otherwise in-process) and, on a
    shared store, claim its own earlier tasks; leadership and takeover are ready to observe."""
    from corral import __version__
    from corral.cluster.config import pools_hash
    from corral.cluster.hosts import default_host_id
    from corral.cluster.repository import ClusterRepository, HostInfo, MemoryCluster

    settings = config.cluster
    shared = parse_store_url(store.url).kind == "postgresql"
    repo: ClusterRepository
    if shared:
        from corral.cluster.pgrepo import PgCluster

        repo = PgCluster(store.url)
    else:
        repo = MemoryCluster()
    address = settings.address or f"http://{config.api.host}:{config.api.port}"
    info = HostInfo(address, __version__, pools_hash(config.pools))
    member = Membership(
        repo,
        settings.host_id or default_host_id(),
        lease=settings.lease,
        info=info,
        alone=not shared,  # its own store: no cluster news at the default log level
    )
    try:
        await member.join()
        leadership = Leadership(member, lambda: list(config.pools))
        takeover = None
        own = None
        if shared:
            tasks_repo = store.tasks
            if hasattr(tasks_repo, "host"):
                tasks_repo.host = member.key
            takeover = Takeover(member, store.tasks, engine, config)
            own = await takeover.claim_own()
        await leadership.update(member.hosts, False)
    except BaseException:
        await repo.close()
        raise
    return ClusterParts(member, leadership, takeover, own)
