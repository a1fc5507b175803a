"""The in-memory store: every repository kept in dicts, for unit tests and users' tests.

It behaves like the SQL stores (the same contract suite runs against it) but nothing survives
the process. It must not import SQLAlchemy.
"""

from __future__ import annotations

from corral.store.base import Store
from corral.store.memory.commandlogs import MemoryCommandLogsRepository
from corral.store.memory.keys import MemoryKeysRepository
from corral.store.memory.pools import MemoryPoolsRepository
from corral.store.memory.tasks import MemoryTaskRepository
from corral.store.url import StoreURL, parse

__all__ = ["MemoryTaskRepository", "open_memory"]


def open_memory(url: StoreURL | None = None) -> Store:
    """A fresh, empty in-memory store."""
    return Store(
        url=(url or parse("memory://")).url,
        tasks=MemoryTaskRepository(),
        pools=MemoryPoolsRepository(),
        keys=MemoryKeysRepository(),
        command_logs=MemoryCommandLogsRepository(),
    )
