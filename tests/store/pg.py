"""A PostgreSQL schema per test inside one database per session (fast, still isolated).

``CREATE DATABASE`` costs about a second here; ``CREATE SCHEMA`` a few milliseconds. Each test
gets a URL whose ``search_path`` is its own empty schema, so migrations and queries see nothing
of other tests. Import both fixtures into a ``conftest.py`` to use them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest


@pytest.fixture(scope="session")
def pg_session_db(pg_admin_url: str) -> Iterator[str]:
    """A database created once for the session (URL without query), dropped at the end."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    name = f"corral_s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = conninfo_to_dict(pg_admin_url)
    user = params.get("user", "root")
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    try:
        yield f"postgresql://{user}@{host}:{port}/{name}"
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_schema_url(pg_session_db: str) -> Iterator[str]:
    """A store URL on a fresh, empty schema of the session database."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_session_db, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{pg_session_db}?options={quote(f'-csearch_path={schema}')}"
    finally:
        with psycopg.connect(pg_session_db, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
