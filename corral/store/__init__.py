"""Persistence behind one interface: ``memory://``, ``sqlite:///path``, ``postgresql://...``.

``store = await open_store(url)`` returns a :class:`Store` whose repositories are grouped by
concept (``store.tasks``, ...). SQL stores run SQLAlchemy 2 Core in worker threads and apply the
Alembic migrations on open. See ``docs/store.md``. This package must not import the layers that
use it (tasks, pools, controller).
"""

from __future__ import annotations

from corral.store.base import Store
from corral.store.url import StoreURL, parse

__all__ = ["Store", "StoreURL", "open_store", "parse"]


async def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open the store named by ``url``; SQL stores are migrated to the newest schema first.

    With ``migrate=False`` a SQL store is opened as it is (``corral db upgrade`` migrates
    explicitly through :func:`corral.store.migrate.upgrade`).
    """
    parsed = parse(url)
    if parsed.kind == "memory":
        from corral.store.memory import open_memory

        return open_memory(parsed)
    from corral.store.sql import open_sql

    return await open_sql(parsed, migrate=migrate)
