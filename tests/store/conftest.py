"""The ``store`` fixture: every contract test runs on memory, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.store import Store, open_store

from .pg import pg_schema_url, pg_session_db

__all__ = ["pg_schema_url", "pg_session_db"]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty store of each kind."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture
async def store(store_url: str) -> AsyncIterator[Store]:
    """An opened (and migrated) empty store, closed afterwards."""
    opened = await open_store(store_url)
    try:
        yield opened
    finally:
        await opened.close()
