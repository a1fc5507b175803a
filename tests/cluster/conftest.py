"""Fixtures of the cluster tests: a migrated PostgreSQL database per test (a copy of a template
migrated once per session), and the cluster repository on memory and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from corral.cluster.repository import ClusterRepository, MemoryCluster


class ManualClock:
    """A clock the test moves."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pg_cluster_url(pg_migrated_url: str) -> str:
    """A fresh migrated database for one test (tests/conftest.py's ``pg_migrated_url``)."""
    return pg_migrated_url


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
