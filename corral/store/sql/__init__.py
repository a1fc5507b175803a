"""The SQL stores: SQLite (one file, WAL) and PostgreSQL (psycopg 3), through SQLAlchemy 2 Core.

Durability on SQLite: ``journal_mode=WAL`` with ``synchronous=NORMAL``. A commit returns once its
frames are written to the WAL file (in the operating system's page cache), so a committed
transaction survives the process being killed (``kill -9``) at any instruction; only a power cut
or kernel crash can lose the last transactions before a checkpoint (``synchronous=FULL`` would
fsync every commit for that, at a large cost). PostgreSQL keeps its server defaults
(``synchronous_commit=on``). This package must not be imported by code that is not a store.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event

from corral.store import revisions
from corral.store.base import Store
from corral.store.sql.commandlogs import SqlCommandLogsRepository
from corral.store.sql.executor import SqlExecutor
from corral.store.sql.keys import SqlKeysRepository
from corral.store.sql.pools import SqlPoolsRepository
from corral.store.sql.tasks import SqlTaskRepository
from corral.store.url import StoreURL

__all__ = ["SQLITE_PRAGMAS", "SqlExecutor", "SqlTaskRepository", "create_sql_engine", "open_sql"]

SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA busy_timeout=10000",
)
"""Run on every SQLite connection (see the module docstring for what they guarantee)."""

POSTGRES_WORKERS = 4
"""Worker threads (and connections) of a PostgreSQL store."""


def _on_sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    assert isinstance(dbapi_conn, sqlite3.Connection)  # noqa: S101 - the pysqlite driver only
    cursor = dbapi_conn.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(pragma)
    cursor.close()


def create_sql_engine(url: StoreURL) -> Engine:
    """A SQLAlchemy engine for a SQL store URL, with corral's connection settings."""
    if url.kind == "sqlite":
        # the writer's and the reader's kept connections, plus tools (migrations) on the side
        engine = create_engine(url.sqlalchemy_url, pool_size=2, max_overflow=2)
        event.listen(engine, "connect", _on_sqlite_connect)
        return engine
    return create_engine(
        url.sqlalchemy_url,
        pool_size=POSTGRES_WORKERS,
        max_overflow=2,
        pool_pre_ping=True,
    )


async def open_sql(url: StoreURL, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) a SQL store: a schema already current costs one read,
    without importing Alembic."""
    engine = create_sql_engine(url)
    if url.kind == "sqlite":
        # one writer and one reader, each keeping its connection (WAL: reads never wait for the
        # writer's commits)
        executor = SqlExecutor(engine, workers=1, readers=1, keep_connections=True)
    else:
        executor = SqlExecutor(engine, workers=POSTGRES_WORKERS)
    try:
        if migrate and not await executor.run(revisions.is_current):
            from corral.store import migrate as migrations

            await executor.run(migrations.upgrade_connection)
    except BaseException:
        await executor.close()
        raise
    return Store(
        url=url.url,
        tasks=SqlTaskRepository(executor),
        pools=SqlPoolsRepository(executor),
        keys=SqlKeysRepository(executor),
        command_logs=SqlCommandLogsRepository(executor),
        close=executor.close,
    )
