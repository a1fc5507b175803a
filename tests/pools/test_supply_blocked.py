"""``supply_blocked``: the preallocator's shortcut that skips reading the waiting tickets.

The shortcut is only allowed when :func:`allocation.plan_supply` would do nothing whatever the
demand, so it is checked against ``plan_supply`` itself, exhaustively with hypothesis.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation
from corral.pools.allocation import PoolLimits
from corral.pools.model import VMState

COUNTED = (VMState.SPAWNING, VMState.READY, VMState.IN_USE, VMState.TERMINATING)


@st.composite
def _pools(draw: st.DrawFn) -> tuple[PoolLimits, dict[VMState, int], list[allocation.IdleVM]]:
    limits = PoolLimits(
        name="p",
        max=draw(st.integers(1, 6)),
        max_starting=draw(st.integers(1, 4)),
        min_ready=draw(st.integers(0, 3)),
    )
    counts = {state: draw(st.integers(0, 4)) for state in COUNTED}
    sandboxes = st.sampled_from(["a", "b", None])
    used = draw(st.integers(0, counts[VMState.READY]))
    idle = [allocation.IdleVM(f"u{i}", draw(sandboxes), float(i)) for i in range(used)]
    return limits, counts, idle


@settings(max_examples=500, deadline=None)
@given(
    _pools(),
    st.lists(st.sampled_from(["a", "b", None]), max_size=8),
    st.integers(0, 6),
)
def test_a_blocked_pool_plans_nothing_whatever_the_demand(
    pool: tuple[PoolLimits, dict[VMState, int], list[allocation.IdleVM]],
    demand: list[str | None],
    expected: int,
) -> None:
    """Catches a shortcut wider than ``plan_supply`` (e.g. a full pool called blocked while an
    idle used VM could be evicted for a waiting ticket): such a pool would never get the fresh
    VM its waiters need."""
    limits, counts, idle = pool
    if allocation.supply_blocked(limits, counts):
        assert allocation.plan_supply(limits, counts, demand, idle, expected) == (
            allocation.SupplyPlan(spawn=0)
        )


def test_the_saturated_pools_of_a_long_queue_are_blocked() -> None:
    """Catches a shortcut that never fires (the 1,000-waiter case would read every waiting
    ticket on every kick again), and one that fires on a pool with room."""
    limits = PoolLimits(name="p", max=4, max_starting=2, min_ready=1)
    assert allocation.supply_blocked(limits, {VMState.IN_USE: 4})
    assert allocation.supply_blocked(limits, {VMState.SPAWNING: 2, VMState.IN_USE: 1})
    assert not allocation.supply_blocked(limits, {VMState.IN_USE: 3})
    # full, but a ready VM might be an idle used one to evict for a waiting ticket
    assert not allocation.supply_blocked(limits, {VMState.IN_USE: 3, VMState.READY: 1})
