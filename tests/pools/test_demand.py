"""The demand estimate: an exponentially decaying rate, the spawn-time average, Little's law, and
the plans that use them (spawn ahead of a burst, retire what demand no longer needs)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation, demand
from corral.pools.allocation import PoolLimits
from corral.pools.model import VM, VMState


def test_a_steady_stream_gives_its_rate() -> None:
    rate = demand.Rate()
    for i in range(500):
        rate.observe(i / 50)  # 50 events per second for 10 s
    assert rate.rate(10.0, floor=0.1) == pytest.approx(50, rel=0.05)


def test_a_burst_is_seen_within_one_spawn_time_and_forgotten_after_the_span() -> None:
    rate = demand.Rate(span=5.0)
    for i in range(11):
        rate.observe(100.0 + i / 200)  # 11 tickets in 50 ms
    # 10 intervals, over no less than the spawn time
    assert rate.rate(100.05, floor=0.2) == pytest.approx(50)
    assert rate.rate(106.0, floor=0.2) == 0.0


def test_one_event_is_no_rate() -> None:
    rate = demand.Rate()
    assert rate.rate(1.0) == 0.0
    rate.observe(1.0)
    assert rate.rate(1.0) == 0.0


def test_littles_law() -> None:
    assert demand.in_flight(200.0, 0.165) == 33
    assert demand.in_flight(0.5, 0.1) == 0  # a trickle needs nothing ahead of it
    assert demand.in_flight(10.0, None) == 0
    assert demand.Average().observe(1.0).observe(2.0).value == pytest.approx(1.2)
    assert demand.in_flight(0.0, 1.0) == 0


@given(st.floats(0.1, 1000), st.floats(0.01, 10))
@settings(max_examples=200, deadline=None)
def test_in_flight_covers_the_rate(rate: float, spawn_time: float) -> None:
    n = demand.in_flight(rate, spawn_time)
    wanted = rate * spawn_time
    assert (n == 0 and wanted < 0.25) or n == math.ceil(wanted)


def test_expected_demand_spawns_ahead_within_limits() -> None:
    limits = PoolLimits(name="p", max=50, max_starting=50, min_ready=20)
    # 20 fresh ready, nothing waiting: without a demand estimate nothing is spawned
    assert allocation.plan_supply(limits, {VMState.READY: 20}).spawn == 0
    # a measured 33 in flight: 33 more, whatever the queue
    assert allocation.plan_supply(limits, {VMState.READY: 20}, expected=33).spawn == 30
    # max_starting still bounds it
    small = PoolLimits(name="p", max=50, max_starting=10, min_ready=20)
    assert allocation.plan_supply(small, {VMState.READY: 20}, expected=33).spawn == 10


def _fresh(name: str, ready_at: float) -> VM:
    return VM(
        name=name,
        pool="p",
        state=VMState.READY,
        created_at=0.0,
        state_since=ready_at,
        ready_at=ready_at,
    )


def test_fresh_vms_beyond_the_demand_are_retired_after_a_grace() -> None:
    limits = PoolLimits(name="p", max=50, max_starting=50, min_ready=2)
    vms = [_fresh(f"v{i}", float(i)) for i in range(6)]
    plan = allocation.plan_terminations(limits, vms, 100.0, keep_fresh=2, surplus_after=30)
    assert [t.vm for t in plan] == ["v0", "v1", "v2", "v3"]
    assert {t.reason for t in plan} == {"surplus"}
    # not before the grace, and never below what is kept
    assert allocation.plan_terminations(limits, vms, 20.0, keep_fresh=2, surplus_after=30) == []
    assert allocation.plan_terminations(limits, vms, 100.0, keep_fresh=6) == []
    assert allocation.plan_terminations(limits, vms, 100.0) == []
