"""The pure allocation and preallocation decisions, exhaustively with hypothesis."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation
from corral.pools.allocation import PoolLimits
from corral.pools.model import ALIVE_VM_STATES, VM, Ticket, TicketState, VMState

POOLS = {
    "a": PoolLimits(name="a", tags=frozenset({"x86", "fedora"}), max=10, max_per_owner=2),
    "b": PoolLimits(name="b", tags=frozenset({"arm", "fedora"}), max=10, max_per_owner=None),
}
SANDBOXES = [None, "s1", "s2"]


@st.composite
def vms(draw: st.DrawFn) -> list[VM]:
    n = draw(st.integers(0, 12))
    result = []
    for i in range(n):
        used = draw(st.booleans())
        result.append(
            VM(
                name=f"vm{i}",
                pool=draw(st.sampled_from(sorted(POOLS))),
                state=draw(st.sampled_from([VMState.READY, VMState.READY, VMState.IN_USE])),
                created_at=0.0,
                state_since=float(draw(st.integers(0, 5))),
                ready_at=float(draw(st.integers(0, 5))),
                uses=draw(st.integers(1, 3)) if used else 0,
                sandbox=draw(st.sampled_from(["s1", "s2"])) if used else None,
            )
        )
    return result


@st.composite
def tickets(draw: st.DrawFn) -> list[Ticket]:
    n = draw(st.integers(0, 12))
    return [
        Ticket(
            id=f"t{i}",
            owner=draw(st.sampled_from(["alice", "bob", "carol"])),
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
            pool=draw(st.sampled_from([None, "a", "b"])),
            tags=tuple(draw(st.sets(st.sampled_from(["x86", "arm", "fedora"]), max_size=2))),
            sandbox=draw(st.sampled_from(SANDBOXES)),
            priority=draw(st.integers(-2, 2)),
            seq=i,
        )
        for i in range(n)
    ]


held_maps = st.dictionaries(
    st.tuples(st.sampled_from(["alice", "bob", "carol"]), st.sampled_from(sorted(POOLS))),
    st.integers(0, 3),
)


@settings(max_examples=100, deadline=None)
@given(tickets(), vms(), held_maps)
def test_allocation_invariants(
    ts: list[Ticket], vs: list[VM], held: dict[tuple[str, str], int]
) -> None:
    plan = allocation.allocate(ts, vs, POOLS, held)
    by_t = {t.id: t for t in ts}
    by_v = {v.name: v for v in vs}
    # no VM in two tickets, no ticket with two VMs
    assert len({a.vm for a in plan}) == len(plan)
    assert len({a.ticket for a in plan}) == len(plan)
    gained: Counter[tuple[str, str]] = Counter()
    for a in plan:
        t, v = by_t[a.ticket], by_v[a.vm]
        assert v.state is VMState.READY and v.ticket is None
        # pool and tags match
        assert t.pool in (None, v.pool)
        assert set(t.tags) <= POOLS[v.pool].tags
        # sandbox rule: a used VM only ever goes back to its own sandbox
        if not v.fresh:
            assert t.sandbox is not None and v.sandbox == t.sandbox
        gained[(t.owner, v.pool)] += 1
    # owner limits hold
    for (owner, pool), n in gained.items():
        limit = POOLS[pool].max_per_owner
        if limit is not None:
            assert held.get((owner, pool), 0) + n <= limit
    # nothing is left on the table: an unserved ticket has no VM it could still take
    taken = {a.vm for a in plan}
    served = {a.ticket for a in plan}
    for t in ts:
        if t.id in served:
            continue
        for v in vs:
            if v.name in taken or v.state is not VMState.READY:
                continue
            limit = POOLS[v.pool].max_per_owner
            under = (
                limit is None or held.get((t.owner, v.pool), 0) + gained[(t.owner, v.pool)] < limit
            )
            matches = t.pool in (None, v.pool) and set(t.tags) <= POOLS[v.pool].tags
            assert not (matches and under and _sandbox_allows(t.sandbox, v))


@settings(max_examples=100, deadline=None)
@given(tickets(), vms())
def test_priority_then_age_order(ts: list[Ticket], vs: list[VM]) -> None:
    # one pool, no limits, fresh VMs only, no sandboxes: the first k tickets in order win
    pools = {"a": PoolLimits(name="a", tags=frozenset({"x86", "arm", "fedora"}))}
    fresh = [
        VM(name=v.name, pool="a", state=VMState.READY, created_at=0.0, state_since=0.0) for v in vs
    ]
    plain = [
        Ticket(
            id=t.id,
            owner=t.owner,
            state=t.state,
            created_at=0.0,
            expires_at=None,
            priority=t.priority,
            seq=t.seq,
        )
        for t in ts
    ]
    plan = allocation.allocate(plain, fresh, pools, {})
    expected = sorted(plain, key=lambda t: (-t.priority, t.seq))[: len(fresh)]
    assert [a.ticket for a in plan] == [t.id for t in expected]


def _ready(name: str, **kw: object) -> VM:
    base: dict[str, object] = {
        "name": name,
        "pool": "a",
        "state": VMState.READY,
        "created_at": 0.0,
        "state_since": 0.0,
    }
    base.update(kw)
    return VM(**base)  # type: ignore[arg-type]


def _waiting(tid: str, **kw: object) -> Ticket:
    base: dict[str, object] = {
        "id": tid,
        "owner": "alice",
        "state": TicketState.WAITING,
        "created_at": 0.0,
        "expires_at": None,
    }
    base.update(kw)
    return Ticket(**base)  # type: ignore[arg-type]


def test_sandbox_affinity_beats_fresh_and_never_crosses() -> None:
    mine = _ready("mine", uses=1, sandbox="s1", ready_at=5.0)
    fresh = _ready("fresh", ready_at=1.0)
    theirs = _ready("theirs", uses=1, sandbox="s2", ready_at=0.0)
    plan = allocation.allocate([_waiting("t", sandbox="s1")], [theirs, fresh, mine], POOLS, {})
    assert plan == [allocation.Assignment("t", "mine")]
    plan = allocation.allocate([_waiting("t", sandbox="s3")], [theirs], POOLS, {})
    assert plan == []
    plan = allocation.allocate([_waiting("t")], [theirs, fresh], POOLS, {})
    assert plan == [allocation.Assignment("t", "fresh")]


def test_owner_at_limit_waits_but_others_are_served() -> None:
    plan = allocation.allocate(
        [_waiting("t1", priority=9), _waiting("t2", owner="bob")],
        [_ready("v1")],
        POOLS,
        {("alice", "a"): 2},
    )
    assert plan == [allocation.Assignment("t2", "v1")]


def _sandbox_allows(sandbox: str | None, vm: VM) -> bool:
    """The sandbox rule, stated independently of the code: a fresh VM serves anybody, a used one
    only its own sandbox."""
    return vm.fresh or (sandbox is not None and vm.sandbox == sandbox)


def test_plan_spawns_counts_spawning_and_respects_limits() -> None:
    limits = PoolLimits(name="a", max=10, max_starting=3, min_ready=5)
    assert allocation.plan_spawns(limits, {}) == 3
    assert allocation.plan_spawns(limits, {VMState.SPAWNING: 3}) == 0
    assert allocation.plan_spawns(limits, {VMState.SPAWNING: 2, VMState.READY: 2}) == 1
    assert allocation.plan_spawns(limits, {VMState.READY: 5}) == 0
    assert allocation.plan_spawns(limits, {VMState.READY: 5}, demand=2) == 2
    assert allocation.plan_spawns(limits, {VMState.IN_USE: 9, VMState.TERMINATING: 1}) == 0


@given(
    st.integers(0, 20),
    st.integers(1, 10),
    st.integers(0, 20),
    st.dictionaries(st.sampled_from(list(VMState)), st.integers(0, 15)),
    st.integers(0, 10),
)
def test_plan_spawns_never_exceeds_max_or_max_starting(
    mx: int, starting: int, ready: int, counts: dict[VMState, int], demand: int
) -> None:
    limits = PoolLimits(name="a", max=mx, max_starting=starting, min_ready=min(ready, mx))
    n = allocation.plan_spawns(limits, counts, demand)
    alive = sum(v for k, v in counts.items() if k in ALIVE_VM_STATES)
    assert n >= 0
    if n:
        assert alive + n <= mx
        assert counts.get(VMState.SPAWNING, 0) + n <= starting


def test_plan_terminations_reasons() -> None:
    limits = PoolLimits(name="a", max=10, max_age=100, max_uses=3, idle_timeout=10)
    vs = [
        _ready("old", created_at=0.0),
        _ready("worn", created_at=90.0, uses=3, sandbox="s"),
        _ready("idle", created_at=90.0, uses=1, sandbox="s", last_used_at=80.0),
        _ready("fresh-idle", created_at=90.0, state_since=50.0),
        _ready("busy", created_at=0.0, state=VMState.IN_USE, ticket="t"),
    ]
    plan = allocation.plan_terminations(limits, vs, now=100.0)
    assert {(t.vm, t.reason) for t in plan} == {
        ("old", "max_age"),
        ("worn", "max_uses"),
        ("idle", "idle_timeout"),
    }


def test_plan_terminations_trims_beyond_max() -> None:
    limits = PoolLimits(name="a", max=1)
    vs = [_ready("v1", ready_at=1.0), _ready("v2", ready_at=2.0)]
    assert [t.vm for t in allocation.plan_terminations(limits, vs, now=5.0)] == ["v1"]


def test_may_reuse() -> None:
    limits = PoolLimits(name="a", reuse_sandbox=True, max_uses=2, max_age=50)
    vm = _ready("v", uses=1, sandbox="s")
    assert allocation.may_reuse(limits, vm, "s", now=10.0)
    assert not allocation.may_reuse(limits, vm, None, now=10.0)
    assert not allocation.may_reuse(limits, _ready("v", uses=2), "s", now=10.0)
    assert not allocation.may_reuse(limits, vm, "s", now=60.0)
    assert not allocation.may_reuse(PoolLimits(name="a"), vm, "s", now=1.0)


def test_route_demand_counts_each_ticket_once() -> None:
    pools = list(POOLS.values())
    demand = allocation.route_demand(
        [_waiting("t1", tags=("fedora",)), _waiting("t2", pool="b"), _waiting("t3", tags=("x",))],
        pools,
    )
    assert demand == {"a": 1, "b": 1}


def test_plan_supply_counts_only_fresh_vms_as_supply() -> None:
    limits = PoolLimits(name="p", max=10, max_starting=4, min_ready=2)
    idle = [allocation.IdleVM(f"u{i}", s, float(i)) for i, s in enumerate("abc")]
    # three idle sandbox VMs are not "ready" for min_ready: two fresh ones are spawned
    plan = allocation.plan_supply(limits, {VMState.READY: 3}, [], idle)
    assert plan == allocation.SupplyPlan(spawn=2)
    # a ticket of sandbox b takes b's VM; a plain ticket needs a fresh one
    plan = allocation.plan_supply(limits, {VMState.READY: 5}, ["b", None], idle)
    assert plan == allocation.SupplyPlan(spawn=1)


def test_plan_supply_evicts_the_oldest_unwanted_idle_vm_when_full() -> None:
    limits = PoolLimits(name="p", max=3, max_starting=3, min_ready=0)
    idle = [allocation.IdleVM(f"u{i}", s, float(i)) for i, s in enumerate("abc")]
    plan = allocation.plan_supply(limits, {VMState.READY: 3}, [None], idle)
    assert plan == allocation.SupplyPlan(spawn=0, evict=("u0",))
    # a's own ticket keeps a's VM: the next oldest goes
    plan = allocation.plan_supply(limits, {VMState.READY: 3}, ["a", None], idle)
    assert plan == allocation.SupplyPlan(spawn=0, evict=("u1",))
    # a VM already terminating frees the room: nothing more is evicted
    plan = allocation.plan_supply(
        limits, {VMState.READY: 2, VMState.TERMINATING: 1}, [None], idle[1:]
    )
    assert plan == allocation.SupplyPlan(spawn=0)
    # min_ready alone never evicts a sandbox's VM
    full = PoolLimits(name="p", max=3, max_starting=3, min_ready=2)
    assert allocation.plan_supply(full, {VMState.READY: 3}, [], idle).evict == ()


@given(
    st.dictionaries(st.sampled_from(list(VMState)), st.integers(0, 12)),
    st.lists(st.sampled_from([None, "a", "b"]), max_size=12),
    st.integers(0, 6),
    st.integers(1, 12),
    st.integers(1, 6),
    st.integers(0, 6),
)
@settings(max_examples=300, deadline=None)
def test_plan_supply_limits(
    counts: dict[VMState, int],
    demand: list[str | None],
    n_idle: int,
    max_: int,
    max_starting: int,
    min_ready: int,
) -> None:
    counts[VMState.READY] = max(counts.get(VMState.READY, 0), n_idle)
    idle = [allocation.IdleVM(f"u{i}", "ab"[i % 2], float(i)) for i in range(n_idle)]
    limits = PoolLimits(name="p", max=max_, max_starting=max_starting, min_ready=min_ready)
    plan = allocation.plan_supply(limits, counts, demand, idle)
    alive = sum(n for s, n in counts.items() if s in ALIVE_VM_STATES)
    assert plan.spawn >= 0
    assert plan.spawn <= max(0, max_ - alive)
    assert plan.spawn <= max(0, max_starting - counts.get(VMState.SPAWNING, 0))
    assert len(plan.evict) <= len(idle) and len(set(plan.evict)) == len(plan.evict)
    # never evict more than the tickets that no VM serves
    assert len(plan.evict) <= demand.count(None) + len(demand)
    if plan.evict:
        assert plan.spawn < max(0, max_starting - counts.get(VMState.SPAWNING, 0)) or (
            plan.spawn == 0
        )
