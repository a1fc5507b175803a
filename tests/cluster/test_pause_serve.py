"""A leader paused (SIGSTOP) past its lease and resumed (SIGCONT): the survivor leads meanwhile
under a new epoch; the woken host does not act under its old session (no lease row ever
carries it again), logs that it lost its lease, and rejoins as a new incarnation (a follower
until rendezvous hashing hands the pool back under a still newer epoch). ``max`` holds in the
backend and the store throughout.

Breakages caught: a heartbeat that revives a lapsed lease (the old session holds the pool
again); leadership kept across a lost lease (the woken host keeps preallocating: ``max``
exceeded or two hosts spawning); no rejoin (its incarnation stays the same).
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from corral.api.server import free_port

from .test_chaos_serve import LEASE, MARGIN, Host, Storm, check_once, db, ready, until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(600)]


def lease_row(url: str) -> tuple[str, str, int] | None:
    rows = db(url, "SELECT holder, session, epoch FROM cluster_leases WHERE name = 'pool/p'")
    if not rows or rows[0][0] is None:
        return None
    return str(rows[0][0]), str(rows[0][1]), int(rows[0][2])


def host_row(url: str, host_id: str) -> tuple[int, str]:
    rows = db(url, "SELECT incarnation, session FROM cluster_hosts WHERE host_id = %s", (host_id,))
    return int(rows[0][0]), str(rows[0][1])


async def test_a_paused_leader_does_not_act_when_it_wakes_and_rejoins(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pg_url)
    inventory = tmp_path / "inventory"
    hosts = [Host(h, free_port(), tmp_path / f"{h}.log") for h in ("h1", "h2")]
    violations: list[str] = []
    storm = Storm(hosts)
    hosts[0].start(config)
    try:
        await until(lambda: ready(hosts[0]), "h1 ready", 60)
        hosts[1].start(config)
        await until(lambda: ready(hosts[1]), "h2 ready", 60)
        await until(lambda: lease_row(pg_url) is not None, "a leader", LEASE + MARGIN)
        await asyncio.sleep(2 * LEASE)  # a hand-over to the preferred host settles
        clients = [asyncio.create_task(storm.client(i)) for i in range(3)]
        first = lease_row(pg_url)
        assert first is not None
        paused = next(h for h in hosts if h.host_id == first[0])
        survivor = next(h for h in hosts if h is not paused)
        old_incarnation, old_session = host_row(pg_url, paused.host_id)
        assert paused.proc is not None
        paused.proc.send_signal(signal.SIGSTOP)
        await until(
            lambda: (row := lease_row(pg_url)) is not None and row[0] == survivor.host_id,
            "the survivor leads",
            LEASE + MARGIN,
        )
        during = lease_row(pg_url)
        assert during is not None and during[2] > first[2]
        end = time.monotonic() + 2 * LEASE
        while time.monotonic() < end:  # paused well past its lease, the storm going on
            await asyncio.to_thread(check_once, pg_url, inventory, violations)
            await asyncio.sleep(0.1)
        paused.proc.send_signal(signal.SIGCONT)
        await until(
            lambda: host_row(pg_url, paused.host_id)[0] > old_incarnation,
            "the woken host rejoined as a new incarnation",
            LEASE + MARGIN,
        )
        end = time.monotonic() + 3 * LEASE
        seen: list[tuple[str, str, int]] = []
        while time.monotonic() < end:
            row = lease_row(pg_url)
            if row is not None:
                seen.append(row)
            await asyncio.to_thread(check_once, pg_url, inventory, violations)
            await asyncio.sleep(0.05)
        assert all(session != old_session for _, session, _ in seen), "the stale session led"
        assert all(epoch >= during[2] for _, _, epoch in seen)
        back = [r for r in seen if r[0] == paused.host_id]
        assert all(epoch > during[2] for _, _, epoch in back), "taken back under a stale epoch"
        assert not violations, violations[:5]
        assert "lost its lease" in paused.log.read_text()
        storm.stop = True
        await asyncio.gather(*clients)
        assert not storm.errors, storm.errors[:5]
    finally:
        storm.stop = True
        await storm.http.aclose()
        for h in hosts:
            if h.proc is not None:
                h.proc.send_signal(signal.SIGCONT)
                h.proc.send_signal(signal.SIGTERM)
        for h in hosts:
            if h.proc is not None:
                h.proc.wait(timeout=60)
