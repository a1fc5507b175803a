"""The :class:`Store` object: one repository per concept, and how to close it.

Adding a concept (see ``docs/store.md``) adds one attribute here. This module must not know
about SQL or about any implementation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from corral.store.commandlogs import CommandLogsRepository
from corral.store.keys import KeysRepository
from corral.store.pools import PoolsRepository
from corral.store.tasks import TaskRepository


class Store:
    """Everything corral persists, grouped by concept (``store.tasks``, ...).

    Built by :func:`corral.store.open_store`; the repositories' methods are all async. Close it
    with :meth:`close` (idempotent).
    """

    def __init__(
        self,
        *,
        url: str,
        tasks: TaskRepository,
        pools: PoolsRepository,
        keys: KeysRepository | None = None,
        command_logs: CommandLogsRepository | None = None,
        close: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.url = url
        self.tasks = tasks
        self.pools = pools
        self.keys = keys
        """Idempotency keys of ticket creates (``None``: this store keeps none)."""
        self.command_logs = command_logs
        """What backend commands printed, per VM (``None``: this store keeps none)."""
        self._close = close
        self._closed = False

    async def close(self) -> None:
        """Release connections and worker threads; further calls do nothing."""
        if self._closed:
            return
        self._closed = True
        if self._close is not None:
            await self._close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"
