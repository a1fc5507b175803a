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


def test_a_steady_stream_converges_on_its_rate() -> None:
    rate = demand.Rate()
    for i in range(2000):
        rate = rate.observe(i / 50)  # 50 events per second for 40 s
    assert rate.decayed(40.0) == pytest.approx(50, rel=0.1)


def test_the_rate_halves_every_half_life_without_events() -> None:
    rate = demand.Rate(value=40.0, at=0.0)
    assert rate.decayed(demand.HALF_LIFE) == pytest.approx(20.0)
    assert rate.decayed(3 * demand.HALF_LIFE) == pytest.approx(5.0)
    assert demand.Rate().decayed(5.0) == 0.0


def test_littles_law() -> None:
    assert demand.in_flight(200.0, 0.165) == 33
    assert demand.in_flight(0.5, 0.1) == 0  # a trickle needs nothing ahead of it
    assert demand.in_flight(10.0, None) == 0
    assert demand.Average().observe(1.0).observe(2.0).value == pytest.approx(1.2)


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
