"""The cluster repository's contract, on memory and on PostgreSQL: hosts with leases,
leadership leases with fencing epochs, and (PostgreSQL) moving a dead host's tasks.

Leases here are short (a fraction of a second) and lapses are waited for as conditions with a
deadline, never by sleeping a fixed time and hoping.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from corral import exceptions
from corral.cluster.repository import ClusterRepository, HostInfo, task_host

SHORT = 0.3
DYING = 3.0
"""A lease that must outlive a few statements on a loaded machine, then run out."""
DEADLINE = 10.0


async def until_dead(repo: ClusterRepository, host_id: str) -> None:
    end = time.monotonic() + DEADLINE
    while True:
        hosts = {h.host_id: h for h in await repo.list_hosts()}
        if not hosts[host_id].alive:
            return
        assert time.monotonic() < end, f"{host_id} still alive after {DEADLINE} s"
        await asyncio.sleep(0.05)


async def test_register_gives_increasing_incarnations_and_lists_the_host(
    repo: ClusterRepository,
) -> None:
    """Breakage caught: a restart that keeps the incarnation (tasks of the previous run would
    look like the live run's and never be recovered)."""
    info = HostInfo("http://h1:8642", "1.0", "abc")
    assert await repo.register("h1", "s1", 15.0, info) == 1
    assert await repo.register("h1", "s2", 15.0, info) == 2
    assert await repo.register("h2", "s3", 15.0, HostInfo()) == 1
    hosts = await repo.list_hosts()
    assert [h.host_id for h in hosts] == ["h1", "h2"]
    h1 = hosts[0]
    assert (h1.incarnation, h1.session, h1.address, h1.version, h1.config_hash) == (
        2,
        "s2",
        "http://h1:8642",
        "1.0",
        "abc",
    )
    assert h1.alive and h1.lease == 15.0


async def test_superseded_session_cannot_heartbeat(repo: ClusterRepository) -> None:
    """Breakage caught: an old incarnation (a paused process) renewing the lease its newer
    incarnation took over."""
    await repo.register("h1", "old", 15.0, HostInfo())
    await repo.register("h1", "new", 15.0, HostInfo())
    assert not await repo.heartbeat("old")
    assert await repo.heartbeat("new")


async def test_lapsed_lease_is_dead_and_not_revived_by_a_heartbeat(
    repo: ClusterRepository,
) -> None:
    """Breakage caught: a heartbeat reviving a lapsed lease (a woken host would resume acting
    as if it had never lost anything)."""
    await repo.register("h1", "s1", SHORT, HostInfo())
    assert await repo.heartbeat("s1")
    await until_dead(repo, "h1")
    assert not await repo.heartbeat("s1")
    assert not (await repo.list_hosts())[0].alive


async def test_resign_ends_the_lease_at_once(repo: ClusterRepository) -> None:
    """Breakage caught: a clean stop that leaves its pools leaderless for a whole lease."""
    await repo.register("h1", "s1", 15.0, HostInfo())
    await repo.resign("s1")
    assert not (await repo.list_hosts())[0].alive
    with pytest.raises(exceptions.LeaseLost):
        await repo.take_lease("pool/a", "h1", "s1", 15.0)


async def test_a_lease_has_one_live_holder_and_a_new_epoch_per_change_of_hands(
    repo: ClusterRepository,
) -> None:
    """Breakages caught: a second host taking a live lease (two leaders); a change of hands
    keeping the epoch (a stale leader's writes would pass the check); a stale epoch passing
    ``check_lease``."""
    await repo.register("h1", "s1", SHORT, HostInfo())
    await repo.register("h2", "s2", 15.0, HostInfo())
    first = await repo.take_lease("pool/a", "h1", "s1", SHORT)
    assert (first.epoch, first.holder, first.session) == (1, "h1", "s1")
    again = await repo.take_lease("pool/a", "h1", "s1", SHORT)
    assert again.epoch == 1, "a renewal by the holder keeps the epoch"
    with pytest.raises(exceptions.LeaseHeld, match="h1"):
        await repo.take_lease("pool/a", "h2", "s2", 15.0)
    await repo.check_lease("pool/a", "s1", 1)
    await until_dead(repo, "h1")  # h1 stops heartbeating: host and pool leases lapse
    end = time.monotonic() + DEADLINE
    while True:
        try:
            taken = await repo.take_lease("pool/a", "h2", "s2", 15.0)
            break
        except exceptions.LeaseHeld:
            assert time.monotonic() < end, "the lapsed lease was never free"
            await asyncio.sleep(0.05)
    assert (taken.epoch, taken.holder) == (2, "h2")
    with pytest.raises(exceptions.StaleEpoch, match="epoch 1"):
        await repo.check_lease("pool/a", "s1", 1)
    await repo.check_lease("pool/a", "s2", 2)
    with pytest.raises(exceptions.StaleEpoch):
        await repo.check_lease("pool/a", "s2", 1)
    assert [(le.name, le.holder, le.epoch) for le in await repo.list_leases()] == [
        ("pool/a", "h2", 2)
    ]


async def test_release_frees_the_lease_for_the_next_taker_with_a_new_epoch(
    repo: ClusterRepository,
) -> None:
    """Breakages caught: a release by a session that does not hold the lease taking effect; a
    released lease handed on under the same epoch."""
    await repo.register("h1", "s1", 15.0, HostInfo())
    await repo.register("h2", "s2", 15.0, HostInfo())
    await repo.take_lease("pool/a", "h1", "s1", 15.0)
    await repo.release_lease("pool/a", "s2")  # not s2's: nothing happens
    with pytest.raises(exceptions.LeaseHeld):
        await repo.take_lease("pool/a", "h2", "s2", 15.0)
    await repo.release_lease("pool/a", "s1")
    taken = await repo.take_lease("pool/a", "h2", "s2", 15.0)
    assert taken.epoch == 2
    with pytest.raises(exceptions.StaleEpoch):
        await repo.check_lease("pool/a", "s1", 1)


async def test_a_host_without_a_live_lease_cannot_take_a_pool(repo: ClusterRepository) -> None:
    """Breakage caught: a paused host, woken after its lease lapsed, taking a free pool lease
    before it rejoined (it would lead under a dead incarnation)."""
    await repo.register("h1", "s1", SHORT, HostInfo())
    await until_dead(repo, "h1")
    with pytest.raises(exceptions.LeaseLost):
        await repo.take_lease("pool/a", "h1", "s1", 15.0)
    with pytest.raises(exceptions.LeaseLost):
        await repo.take_lease("pool/b", "h1", "unknown-session", 15.0)


@pytest.mark.parametrize("duration", [0.0, -1.0, 1e9])
async def test_bad_lease_duration_is_refused(repo: ClusterRepository, duration: float) -> None:
    await repo.register("h1", "s1", 15.0, HostInfo())
    with pytest.raises(exceptions.InvalidInput, match="duration"):
        await repo.take_lease("pool/a", "h1", "s1", duration)
    assert await repo.list_leases() == []


# --- task ownership (PostgreSQL: the tasks carry their host) ---------------------------------


def _insert_tasks(url: str, rows: list[tuple[str, str, str]]) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for task_id, host, state in rows:
            conn.execute(
                "INSERT INTO tasks (id, verb, tag, priority, recovery, persist, clean, locks,"
                " jobs, created_at, state, jobs_done, code, message, result, updated_at, host)"
                " VALUES (%s, 'spawn', '', 'medium', 'auto', 'auto', 'auto', '{}', '[]', 0,"
                " %s, 0, '', '', 'null', 0, %s)",
                (task_id, state, host),
            )


def _hosts_of(url: str) -> dict[str, str]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return {r[0]: r[1] for r in conn.execute("SELECT id, host FROM tasks").fetchall()}


@pytest.mark.postgres
async def test_a_dead_incarnations_tasks_move_to_exactly_one_survivor(
    pg_cluster_url: str,
) -> None:
    """Two survivors race to claim a dead host's tasks: every unfinished task moves exactly
    once, finished ones stay, and a live host's tasks are never moved. Breakages caught: a
    claim not conditional on the dead incarnation (the live host's task moves), or not
    conditional on the task's current host (both survivors get the same task)."""
    from corral.cluster.pgrepo import PgCluster

    a, b, c = PgCluster(pg_cluster_url), PgCluster(pg_cluster_url), PgCluster(pg_cluster_url)
    try:
        # long enough to outlive the inserts and the two "still alive" claims under load (with
        # SHORT, a loaded machine let it die first and the first claim succeeded)
        await a.register("dead", "sd", DYING, HostInfo())
        await b.register("s1", "s1", 15.0, HostInfo())
        await c.register("s2", "s2", 15.0, HostInfo())
        dead, live = task_host("dead", 1), task_host("s2", 1)
        _insert_tasks(
            pg_cluster_url,
            [(f"t{i}", dead, "running") for i in range(20)]
            + [("done", dead, "finished"), ("alive", live, "running")],
        )
        assert await b.claim_tasks(dead, task_host("s1", 1), "dead", 1) == [], (
            "claimed while the host was still alive"
        )
        assert await b.claim_tasks(live, task_host("s1", 1), "s2", 1) == []
        await until_dead(a, "dead")
        assert await b.task_hosts() == {dead: 20, live: 1}
        got_b, got_c = await asyncio.gather(
            b.claim_tasks(dead, task_host("s1", 1), "dead", 1),
            c.claim_tasks(dead, task_host("s2", 1), "dead", 1),
        )
        assert sorted(got_b + got_c) == sorted(f"t{i}" for i in range(20))
        assert not set(got_b) & set(got_c)
        hosts = _hosts_of(pg_cluster_url)
        assert hosts["done"] == dead and hosts["alive"] == live
    finally:
        for r in (a, b, c):
            await r.close()


@pytest.mark.postgres
async def test_a_restarted_host_claims_its_earlier_incarnation_and_hostless_rows(
    pg_cluster_url: str,
) -> None:
    """Breakage caught: a restart recovering another live host's tasks (the original bug of
    issue 11: two processes on one database rolled back each other's spawns)."""
    from corral.cluster.pgrepo import PgCluster

    repo = PgCluster(pg_cluster_url)
    try:
        await repo.register("h1", "a", 15.0, HostInfo())
        await repo.register("h2", "b", 15.0, HostInfo())
        await repo.register("h1", "c", 15.0, HostInfo())  # h1 restarted: incarnation 2
        _insert_tasks(
            pg_cluster_url,
            [
                ("mine-old", "h1#1", "running"),
                ("legacy", "", "running"),
                ("h2s", "h2#1", "running"),
            ],
        )
        me = task_host("h1", 2)
        assert await repo.claim_tasks("h1#1", me, "h1", 1) == ["mine-old"]
        assert await repo.claim_legacy(me) == ["legacy", "mine-old"]
        assert _hosts_of(pg_cluster_url)["h2s"] == "h2#1"
    finally:
        await repo.close()
