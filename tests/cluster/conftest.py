"""Fixtures of the cluster tests: a migrated PostgreSQL database per test (a copy of a template
migrated once per session), and the cluster repository on memory and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import pytest

from corral.cluster.repository import ClusterRepository, MemoryCluster


class ManualClock:
    """A clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="session")
def pg_cluster_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated database made once per session; each test copies it."""
    import psycopg

    from corral.store import migrate

    name = f"corral_ct_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl())
    try:
        yield name
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_cluster_url(pg_admin_url: str, pg_cluster_template: str) -> Iterator[str]:
    """A fresh migrated database for one test, dropped afterwards."""
    import psycopg

    name = f"corral_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_cluster_template}"')
    try:
        yield urlsplit(pg_admin_url)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(pg_admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def repo(request: pytest.FixtureRequest) -> AsyncIterator[ClusterRepository]:
    """The cluster repository on every implementation."""
    made: ClusterRepository
    if request.param == "memory":
        made = MemoryCluster()
    else:
        from corral.cluster.pgrepo import PgCluster

        made = PgCluster(request.getfixturevalue("pg_cluster_url"))
    try:
        yield made
    finally:
        await made.close()
