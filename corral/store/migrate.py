"""Schema migrations: Alembic, driven programmatically (no alembic.ini needed).

:func:`upgrade` brings a database to the newest schema (what ``open_store`` does on open and what
``corral db upgrade`` calls); :func:`diff` compares a database with the schema the code declares.
Must not be imported by the event loop's hot paths: it runs synchronously.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection

from corral.store.sql.schema import load_metadata
from corral.store.url import parse

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for corral's migrations, bound to ``connection`` if given."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest migration's revision id."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None  # noqa: S101 - there is always at least 0001
    return revision


def current(connection: Connection) -> str | None:
    """The revision the database is at (``None`` when it was never migrated)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade_connection(connection: Connection, revision: str = "head") -> None:
    """Migrate the database behind ``connection`` (inside the caller's transaction)."""
    command.upgrade(alembic_config(connection), revision)


def upgrade(url: str, revision: str = "head") -> str | None:
    """Migrate the SQL store at ``url`` to ``revision``; return the revision it is at after.

    Synchronous, for ``corral db upgrade``; ``memory://`` has nothing to migrate (``None``).
    """
    parsed = parse(url)
    if parsed.kind == "memory":
        return None
    from corral.store.sql import create_sql_engine

    engine = create_sql_engine(parsed)
    try:
        with engine.begin() as conn:
            upgrade_connection(conn, revision)
            return current(conn)
    finally:
        engine.dispose()


def diff(connection: Connection) -> list[Any]:
    """Differences between the database and the declared schema (empty when they match)."""
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, load_metadata()))
