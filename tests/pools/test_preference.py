"""Pool preference for a tag (resalloc's tag priorities) and the pool's description.

What each test catches: ``tag_priority`` ignored when choosing among ready VMs (the older VM of
the expensive pool would be taken) or when routing demand (the first pool by name would spawn);
preference ranked above sandbox affinity; a priority for a tag the pool does not have accepted.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation
from corral.pools.allocation import PoolLimits
from corral.pools.config import PoolConfig, validate_pool
from corral.pools.model import VM, Ticket, TicketState, VMState

CHEAP = PoolLimits(name="zz-cheap", tags=frozenset({"fedora"}), tag_priority=(("fedora", 10),))
CLOUD = PoolLimits(name="aa-cloud", tags=frozenset({"fedora"}), tag_priority=(("fedora", -10),))
POOLS = {p.name: p for p in (CHEAP, CLOUD)}


def _ready(name: str, pool: str, ready_at: float, sandbox: str | None = None) -> VM:
    return VM(
        name=name,
        pool=pool,
        state=VMState.READY,
        created_at=0.0,
        state_since=ready_at,
        ready_at=ready_at,
        uses=1 if sandbox else 0,
        sandbox=sandbox,
    )


def _waiting(
    tid: str = "t", tags: tuple[str, ...] = ("fedora",), sandbox: str | None = None
) -> Ticket:
    return Ticket(
        id=tid,
        owner="alice",
        state=TicketState.WAITING,
        created_at=0.0,
        expires_at=None,
        tags=tags,
        sandbox=sandbox,
    )


def test_the_preferred_pool_serves_first_even_with_a_younger_vm() -> None:
    old_cloud = _ready("cloud-1", CLOUD.name, ready_at=0.0)
    young_cheap = _ready("cheap-1", CHEAP.name, ready_at=9.0)
    plan = allocation.allocate([_waiting()], [old_cloud, young_cheap], POOLS, {})
    assert plan == [allocation.Assignment("t", "cheap-1")]
    # without the tag asked for, no preference: the oldest VM wins as before
    plan = allocation.allocate([_waiting(tags=())], [old_cloud, young_cheap], POOLS, {})
    assert plan == [allocation.Assignment("t", "cloud-1")]


def test_sandbox_affinity_ranks_above_preference() -> None:
    mine = _ready("cloud-1", CLOUD.name, ready_at=5.0, sandbox="s1")
    fresh = _ready("cheap-1", CHEAP.name, ready_at=0.0)
    plan = allocation.allocate([_waiting(sandbox="s1")], [fresh, mine], POOLS, {})
    assert plan == [allocation.Assignment("t", "cloud-1")]


def test_demand_goes_to_the_preferred_pool() -> None:
    assert allocation.pools_for(_waiting(), POOLS.values()) == [CHEAP.name, CLOUD.name]
    assert allocation.route_demand([_waiting()], [CLOUD, CHEAP]) == {CHEAP.name: 1, CLOUD.name: 0}
    # equal preference: by name, as before
    plain = [
        PoolLimits(name="b", tags=frozenset({"x"})),
        PoolLimits(name="a", tags=frozenset({"x"})),
    ]
    assert allocation.route_demand([_waiting(tags=("x",))], plain) == {"a": 1, "b": 0}


def test_preference_sums_the_tickets_tags() -> None:
    pool = PoolLimits(name="p", tags=frozenset({"a", "b"}), tag_priority=(("a", 3), ("b", -1)))
    assert pool.preference(["a", "b"]) == 2
    assert pool.preference(["a", "a"]) == 3
    assert pool.preference([]) == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([CHEAP.name, CLOUD.name]),
            st.integers(0, 5),
            st.sampled_from([None, None, "s1", "s2"]),
        ),
        max_size=6,
    ),
    st.sampled_from([None, "s1", "s2"]),
)
def test_choice_is_sandbox_first_then_preference(
    specs: list[tuple[str, int, str | None]], sandbox: str | None
) -> None:
    vms = [_ready(f"vm{i}", pool, float(at), sb) for i, (pool, at, sb) in enumerate(specs)]
    plan = allocation.allocate([_waiting(sandbox=sandbox)], vms, POOLS, {})
    own = [v for v in vms if sandbox is not None and v.sandbox == sandbox]
    fresh = [v for v in vms if v.fresh]
    if not own and not fresh:
        assert plan == []
        return
    assert len(plan) == 1
    chosen = next(v for v in vms if v.name == plan[0].vm)
    if own:
        assert chosen in own
        candidates = own
    else:
        assert chosen.fresh
        candidates = fresh
    best = max(POOLS[v.pool].preference(["fedora"]) for v in candidates)
    assert POOLS[chosen.pool].preference(["fedora"]) == best


def _pool(**raw: object) -> PoolConfig | list[str]:
    return validate_pool("p", {"backend": {"type": "fake"}, **raw})


def test_config_tag_priority_and_description() -> None:
    pool = _pool(tags=["x86"], tag_priority={"x86": 5}, description="cheap local builders")
    assert isinstance(pool, PoolConfig)
    assert pool.description == "cheap local builders"
    assert pool.limits().preference(["x86"]) == 5
    problems = _pool(tags=["x86"], tag_priority={"arm": 5})
    assert problems == ["pools.p.tag_priority.arm: not one of the pool's tags (x86)"]
    assert isinstance(_pool(tags=["x86"], tag_priority={"x86": "5"}), list)
    assert isinstance(_pool(description=""), list)
