"""Shared fixtures: PostgreSQL access for the contract suites; logging restored after each test.

PostgreSQL tests read ``CORRAL_TEST_PG_URL``. Without it they skip with a visible reason; with
it set, an unreachable server is a failure, never a skip (CI sets it).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

PG_ENV = "CORRAL_TEST_PG_URL"


@pytest.fixture(autouse=True)
def _logging_as_it_was() -> Iterator[None]:
    """Undo what a test's in-process ``corral serve`` did to logging.

    ``serve`` calls :func:`corral.logs.configure`, which replaces the root logger's handlers with
    one writing INFO and above to the *current* stderr: every later test in the process then got
    log lines in its captured output (``corral hosts --json`` run by Typer's runner after
    ``tests/controller/test_restart_reconcile.py`` failed to parse its JSON, an order-dependent
    failure). Handlers added since the test started are removed, except pytest's own capture
    handlers (pytest removes those itself), and the root's and alembic's levels are restored.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic = logging.getLogger("alembic")
    alembic_level = alembic.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers and not type(handler).__module__.startswith("_pytest"):
            root.removeHandler(handler)
    root.setLevel(level)
    alembic.setLevel(alembic_level)


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


@pytest.fixture(scope="session")
def pg_migrated_template(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to the head once per session, that each test copies."""
    import psycopg

    from corral.store import migrate

    name = f"corral_mt_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl())
    try:
        yield name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_migrated_url(pg_admin_url: str, pg_migrated_template: str) -> Iterator[str]:
    """A fresh migrated database for one test (a copy of the template), dropped afterwards."""
    import psycopg

    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_migrated_template}"')
    try:
        yield urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
