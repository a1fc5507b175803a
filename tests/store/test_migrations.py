"""Migrating an empty database yields exactly the schema the code declares."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine

from corral.store import migrate, parse


def _check(url: str) -> None:
    assert migrate.upgrade(url) == migrate.head()
    assert migrate.upgrade(url) == migrate.head()  # a second upgrade is a no-op
    engine = create_engine(parse(url).sqlalchemy_url)
    try:
        with engine.connect() as conn:
            assert migrate.diff(conn) == []
            assert migrate.current(conn) == migrate.head()
    finally:
        engine.dispose()


def test_sqlite_migrations_match_declared_schema(tmp_path: Path) -> None:
    _check(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_postgresql_migrations_match_declared_schema(pg_url: str) -> None:
    _check(pg_url)


def test_diff_sees_a_missing_table(tmp_path: Path) -> None:
    """The check can fail: an unmigrated database differs from the declared schema."""
    engine = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        with engine.connect() as conn:
            assert {d[1].name for d in migrate.diff(conn) if d[0] == "add_table"} >= {
                "tasks",
                "task_recoveries",
            }
    finally:
        engine.dispose()


def test_memory_has_nothing_to_migrate() -> None:
    assert migrate.upgrade("memory://") is None
