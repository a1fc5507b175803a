"""Shared fixtures: PostgreSQL access for the contract suites.

PostgreSQL tests read ``CORRAL_TEST_PG_URL``. Without it they skip with a visible reason; with
it set, an unreachable server is a failure, never a skip (CI sets it).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

PG_ENV = "CORRAL_TEST_PG_URL"


def _admin_url() -> str | None:
    return os.environ.get(PG_ENV) or None


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """The PostgreSQL URL from the environment, checked once per session."""
    url = _admin_url()
    if url is None:
        pytest.skip(f"{PG_ENV} is not set: PostgreSQL suites skipped")
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        pytest.fail(f"{PG_ENV}={url} is set but PostgreSQL is not reachable: {exc}")
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    # the admin URL with only the database replaced (user, password, host, port, query kept)
    url = urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl()
    try:
        yield url
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
