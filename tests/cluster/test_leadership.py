"""Membership and leadership on the in-memory cluster with a manual clock: every pool has
exactly one leader among the live hosts, pools spread, a dead leader's pools change hands with
a new epoch, a host that lost its lease stops leading and rejoins as a new incarnation."""

from __future__ import annotations

import logging

import pytest

from corral import exceptions
from corral.cluster.repository import HostInfo, MemoryCluster
from corral.cluster.service import Membership
from corral.controller.leadership import Leadership, host_views

from .conftest import ManualClock

POOLS = [f"pool{i}" for i in range(12)]
LEASE = 2.0


class Host:
    def __init__(self, repo: MemoryCluster, clock: ManualClock, host_id: str, config: str = "c"):
        self.member = Membership(repo, host_id, lease=LEASE, info=HostInfo(config_hash=config))
        self.leadership = Leadership(self.member, lambda: POOLS, clock=clock)

    async def beat(self) -> None:
        kept = await self.member.beat_once()
        await self.leadership.update(self.member.hosts, not kept)


async def three_hosts() -> tuple[ManualClock, MemoryCluster, list[Host]]:
    clock = ManualClock()
    repo = MemoryCluster(clock)
    hosts = [Host(repo, clock, f"h{i}") for i in range(3)]
    for h in hosts:
        await h.member.join()
    for _ in range(2):
        for h in hosts:
            await h.beat()
    return clock, repo, hosts


async def advance(clock: ManualClock, seconds: float, beating: list[Host]) -> None:
    """Move time on by ``seconds`` in heartbeat-sized steps, ``beating`` hosts heartbeating."""
    step = LEASE / 4
    moved = 0.0
    while moved < seconds:
        clock.now += step
        moved += step
        for h in beating:
            await h.beat()


def leaders(hosts: list[Host], pool: str) -> list[str]:
    return [h.member.host_id for h in hosts if h.leadership.leads(pool)]


async def test_each_pool_has_one_leader_and_pools_spread_over_the_hosts() -> None:
    """Breakages caught: every host leading every pool (the preferred-leader rule ignored or
    the lease not exclusive); all pools on one host (no spread)."""
    _, _, hosts = await three_hosts()
    for pool in POOLS:
        assert len(leaders(hosts, pool)) == 1, pool
    counts = [len(h.leadership.led()) for h in hosts]
    assert sum(counts) == len(POOLS) and all(n > 0 for n in counts), counts


async def test_a_dead_leaders_pools_go_to_survivors_under_a_new_epoch() -> None:
    """h0 stops heartbeating; after its lease the survivors lead every pool, each under a
    higher epoch, and h0 (woken) no longer leads anything nor passes the epoch check.
    Breakages caught: a survivor not taking a lapsed lease (pool leaderless); the epoch kept
    on a change of hands; a woken leader trusting its stale local view."""
    clock, _, hosts = await three_hosts()
    dead, survivors = hosts[0], hosts[1:]
    had = dead.leadership.led()
    assert had
    await advance(clock, LEASE + 1.0, survivors)
    for pool in POOLS:
        assert leaders(survivors, pool) and len(leaders(survivors, pool)) == 1, pool
    for pool, epoch in had.items():
        new = next(h for h in survivors if h.leadership.leads(pool))
        assert new.leadership.epoch(pool) == epoch + 1
        assert not dead.leadership.leads(pool), "its local deadline passed"
    pool = next(iter(had))
    with pytest.raises(exceptions.StaleEpoch):
        await dead.leadership.check(pool)


async def test_a_host_that_lost_its_lease_stops_leading_and_rejoins_as_a_follower() -> None:
    """The paused h0 wakes: its heartbeat finds the lease lapsed; it drops every pool, joins as
    incarnation 2, and takes nothing while the survivors hold the pools. Breakages caught: a
    lapsed heartbeat revived; leadership kept across a lost lease."""
    clock, _, hosts = await three_hosts()
    h0 = hosts[0]
    await advance(clock, LEASE + 1.0, hosts[1:])
    await h0.beat()
    assert h0.member.incarnation == 2
    assert h0.leadership.led() == {}
    for pool in POOLS:
        assert len(leaders(hosts, pool)) == 1, pool


async def test_a_host_joining_takes_over_its_share_at_once_by_hand_over() -> None:
    """Breakage caught: a new host never receiving pools while the others live (no spread
    after a restart)."""
    clock = ManualClock()
    repo = MemoryCluster(clock)
    h0 = Host(repo, clock, "h0")
    await h0.member.join()
    await h0.beat()
    assert len(h0.leadership.led()) == len(POOLS)
    h1 = Host(repo, clock, "h1")
    await h1.member.join()
    for _ in range(2):
        await h0.beat()
        await h1.beat()
    assert h1.leadership.led()
    for pool in POOLS:
        assert len(leaders([h0, h1], pool)) == 1, pool


async def test_disagreeing_configurations_are_warned_about_and_shown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Breakage caught: hosts running different pool configurations silently."""
    clock = ManualClock()
    repo = MemoryCluster(clock)
    a, b = Host(repo, clock, "a", config="one"), Host(repo, clock, "b", config="two")
    await a.member.join()
    with caplog.at_level(logging.WARNING, logger="corral.cluster.service"):
        await b.member.join()
    assert b.member.warning is not None and "a" in b.member.warning and "b" in b.member.warning
    assert "disagree" in caplog.text
    await a.beat()
    await b.beat()
    views = await host_views(a.member)
    assert [(v.host_id, v.alive, v.this) for v in views] == [("a", True, True), ("b", True, False)]
    assert sum(len(v.leads) for v in views) == len(POOLS)
