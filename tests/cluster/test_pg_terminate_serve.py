"""PostgreSQL's connections killed during a storm: three ``corral serve`` processes on one
database, a ticket storm through all three, and every few seconds ``pg_terminate_backend`` of
every connection to the database (the store's pool, the cluster repository, the lock
manager's batcher and listener, the wake-up listener). The hosts reconnect and go on: every
ticket is assigned and served, a host leads the pool after each round, no host lost its lease
for good (each is alive at the end), ``max`` holds throughout, and at the end the backend's
inventory equals the store's alive VMs and the lock and backend histories hold.

Slow; needs ``CORRAL_TEST_PG_URL``. Breakages caught: a component that does not reconnect
(checked with the cluster repository keeping its dead connection, ``tests/mutants.py
cluster-repo-no-reconnect``: no host leads after a round; a host that stops answering or
heartbeating would leave tickets unassigned or be dead at the end); a leak (inventory and store
disagree at the end).
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
from pathlib import Path

import pytest

from corral.api.server import free_port

from .test_chaos_serve import (
    LEASE,
    MARGIN,
    OBSERVER,
    Host,
    Storm,
    check_the_end,
    db,
    install_history,
    leader,
    ready,
    sample,
    until,
    write_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

ROUNDS = int(os.environ.get("CORRAL_CHAOS_PG_KILLS", "6"))


def terminate_connections(url: str) -> int:
    """Kill every connection of the hosts to this test's database; how many were killed.

    The test's own observers (the invariant sampler, the waits) are spared: killing them would
    fail the test on its own connection, not on anything corral did.
    """
    rows = db(
        url,
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        " AND application_name <> %s",
        (OBSERVER,),
    )
    return int(rows[0][0])


def alive_hosts(url: str) -> set[str]:
    rows = db(url, "SELECT host_id FROM cluster_hosts WHERE lease_expires_at >= corral_lock_now()")
    return {str(r[0]) for r in rows}


async def test_hosts_reconnect_and_go_on_when_their_connections_are_killed(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pg_url)
    inventory = tmp_path / "inventory"
    hosts = [Host(h, free_port(), tmp_path / f"{h}.log") for h in ("h1", "h2", "h3")]
    rng = random.Random(20261203)
    storm = Storm(hosts)
    violations: list[str] = []
    clients: list[asyncio.Task[None]] = []
    hosts[0].start(config)
    try:
        await until(lambda: ready(hosts[0]), "h1 ready", 60)
        install_history(pg_url)
        for h in hosts[1:]:
            h.start(config)
        for h in hosts[1:]:
            await until(lambda h=h: ready(h), f"{h.host_id} ready", 60)
        await until(lambda: leader(pg_url) is not None, "a leader", LEASE + MARGIN)
        clients = [asyncio.create_task(storm.client(i)) for i in range(6)]
        sampler = asyncio.create_task(sample(pg_url, inventory, storm, violations))
        killed = 0
        for n in range(ROUNDS):
            await asyncio.sleep(rng.uniform(1.0, 3.0))
            killed += await asyncio.to_thread(terminate_connections, pg_url)
            await until(
                lambda: leader(pg_url) is not None,
                f"round {n}: a host leads after the connections were killed",
                LEASE + MARGIN,
            )
            assert not violations, violations[:5]
            for task in clients:
                if task.done():
                    task.result()
        assert killed >= 3 * ROUNDS, f"only {killed} connections killed: nothing was tested"
        await until(
            lambda: alive_hosts(pg_url) == {"h1", "h2", "h3"},
            "every host alive after the last round",
            LEASE + MARGIN,
        )
        storm.stop = True
        await asyncio.gather(*clients)
        await sampler
        assert not violations, violations[:5]
        assert not storm.errors, storm.errors[:5]
        assert storm.created and storm.created == storm.assigned
        assert all(h.proc is not None and h.proc.poll() is None for h in hosts), "a host exited"
        await check_the_end(pg_url, tmp_path)
    finally:
        storm.stop = True
        for task in clients:  # a failed run: no client may call on a closed connection pool
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await storm.http.aclose()
        for h in hosts:
            if h.proc is not None:
                h.proc.send_signal(signal.SIGTERM)
        for h in hosts:
            if h.proc is not None:
                try:
                    h.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(h.proc.pid, signal.SIGKILL)
                    h.proc.wait(timeout=10)
