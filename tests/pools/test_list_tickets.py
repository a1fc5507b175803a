"""List tickets (issue 15): several pool or tag entries, each with its count, in one ticket.

Pure planner properties with hypothesis. Each test names the deliberate breakage of
``corral/pools/allocation.py`` it fails on.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation
from corral.pools.allocation import Assignment, PoolLimits
from corral.pools.model import VM, Request, Ticket, TicketState, VMState

TAGS = {"a": frozenset({"x86", "fast"}), "b": frozenset({"x86"}), "c": frozenset({"s390x"})}


def pools(
    *, reserve_after: float | None = None, max_per_owner: int | None = None
) -> dict[str, PoolLimits]:
    """Three pools: ``a`` and ``b`` (x86; ``a`` also fast), ``c`` (s390x)."""
    return {
        name: PoolLimits(
            name=name,
            tags=tags,
            max=8,
            reserve_after=reserve_after,
            max_per_owner=max_per_owner,
        )
        for name, tags in TAGS.items()
    }


ENTRIES = st.one_of(
    st.builds(Request, pool=st.sampled_from(sorted(TAGS)), count=st.integers(1, 3)),
    st.builds(
        Request,
        tags=st.sampled_from([("x86",), ("fast",), ("s390x",), ("fast", "x86")]),
        count=st.integers(1, 3),
    ),
)


def ticket(tid: str, parts: list[Request], *, seq: int = 0, **kw: object) -> Ticket:
    return Ticket(
        id=tid,
        owner=str(kw.pop("owner", "o")),
        state=TicketState.WAITING,
        created_at=float(kw.pop("created_at", 0.0)),  # type: ignore[arg-type]
        expires_at=None,
        seq=seq,
        count=sum(p.count for p in parts),
        requests=tuple(parts),
        **kw,  # type: ignore[arg-type]
    )


def ready(name: str, pool: str, **kw: object) -> VM:
    return VM(name=name, pool=pool, state=VMState.READY, created_at=0.0, state_since=0.0, **kw)  # type: ignore[arg-type]


@st.composite
def free_vms(draw: st.DrawFn) -> list[VM]:
    counts = draw(st.fixed_dictionaries({p: st.integers(0, 4) for p in sorted(TAGS)}))
    return [ready(f"{p}{i}", p) for p, n in counts.items() for i in range(n)]


def fits(entry: Request, pool: str) -> bool:
    return entry.pool in (None, pool) and frozenset(entry.tags) <= TAGS[pool]


def check(tickets: list[Ticket], vms: list[VM], plan: list[Assignment], limit: int | None) -> None:
    """Every assignment is whole and valid: each list ticket gets exactly one VM per machine it
    asked for, entry by entry in its order, each entry's VMs of one pool that fits it, free
    ready VMs only, no VM twice, within ``max_per_owner``."""
    by_id = {t.id: t for t in tickets}
    pool_of = {v.name: v.pool for v in vms}
    free = {v.name for v in vms if v.state is VMState.READY and v.ticket is None}
    seen: set[str] = set()
    held: Counter[tuple[str, str]] = Counter()
    for a in plan:
        t = by_id[a.ticket]
        names = [n for n, _ in a.vms]
        assert all(load == 0 for _, load in a.vms)
        assert len(names) == t.count == sum(p.count for p in t.parts), "all or nothing"
        assert not seen & set(names) and set(names) <= free
        seen.update(names)
        rest = iter(names)
        for entry in t.parts:
            mine = [pool_of[next(rest)] for _ in range(entry.count)]
            assert len(set(mine)) == 1 and fits(entry, mine[0]), (entry, mine)
        for name in names:
            held[(t.owner, pool_of[name])] += 1
    if limit is not None:
        assert all(n <= limit for n in held.values())


def feasible(t: Ticket, vms: list[VM], limit: int | None) -> bool:
    """Brute force: can ``t`` be served alone from ``vms``?"""
    free = Counter(v.pool for v in vms)
    cap = {p: free[p] if limit is None else min(free[p], limit) for p in TAGS}
    options = [[p for p in sorted(TAGS) if fits(e, p)] for e in t.parts]
    for choice in itertools.product(*options):
        used: Counter[str] = Counter()
        for entry, pool in zip(t.parts, choice, strict=True):
            used[pool] += entry.count
        if all(used[p] <= cap[p] for p in used):
            return True
    return False


@settings(max_examples=300, deadline=None)
@given(
    parts=st.lists(st.lists(ENTRIES, min_size=1, max_size=4), min_size=1, max_size=4),
    vms=free_vms(),
    limit=st.sampled_from([None, 2, 4]),
)
def test_a_list_ticket_is_assigned_all_together_or_not_at_all(
    parts: list[list[Request]], vms: list[VM], limit: int | None
) -> None:
    """Whatever the tickets and free VMs: each list ticket gets a whole, valid assignment or
    nothing, and a ticket alone is served whenever some choice of pools can serve it.
    Breakage caught: a VM taken for one entry and not given back when a later entry finds
    none (a partial assignment), an entry served from a pool that does not fit it, a greedy
    first-pool choice (entry 1 takes ``a`` which entry 2 needed), ``max_per_owner`` not
    summed over the entries in one pool."""
    tickets = [ticket(f"t{i}", p, seq=i, owner=f"o{i % 2}") for i, p in enumerate(parts)]
    plan = allocation.allocate(tickets, vms, pools(max_per_owner=limit), {}, now=0.0)
    check(tickets, vms, plan, limit)
    alone = allocation.allocate(tickets[:1], vms, pools(max_per_owner=limit), {}, now=0.0)
    assert bool(alone) == feasible(tickets[0], vms, limit)


def test_a_list_ticket_backtracks_from_its_preferred_pools() -> None:
    """One x86 machine, then two: with 2 free in ``a`` and 1 in ``b``, the first entry must
    take ``b`` (not its preferred ``a``) so that the second gets both ``a``. Breakage caught:
    a greedy choice of pools (the first fitting pool kept, no backtracking)."""
    vms = [ready("a0", "a"), ready("a1", "a"), ready("b0", "b")]
    t = ticket("t", [Request(tags=("x86",)), Request(tags=("x86",), count=2)])
    (a,) = allocation.allocate([t], vms, pools(), {}, now=0.0)
    assert a.vm == "b0" and sorted(n for n, _ in a.others) == ["a0", "a1"]


def test_entries_are_served_in_their_order_each_by_its_own_pool() -> None:
    """``vms`` follow the entries: 2 of ``a`` by pool, then 1 by tag ``s390x`` (pool ``c``).
    Breakage caught: VMs listed by pool or name rather than by entry."""
    vms = [ready("a0", "a"), ready("a1", "a"), ready("c0", "c"), ready("b0", "b")]
    t = ticket("t", [Request(tags=("s390x",)), Request(pool="a", count=2)])
    (a,) = allocation.allocate([t], vms, pools(), {}, now=0.0)
    names = [n for n, _ in a.vms]
    assert names[0] == "c0" and sorted(names[1:]) == ["a0", "a1"]


def test_a_list_ticket_that_cannot_be_served_leaves_every_vm_to_others() -> None:
    """A list ticket asking for 2 of ``c`` with only one: it takes nothing, and a later
    one-machine ticket gets the ``a`` VM its first entry could have used. Breakage caught:
    entries taken one by one (the ``a`` VM held by the waiting list ticket)."""
    vms = [ready("a0", "a"), ready("c0", "c")]
    big = ticket("big", [Request(pool="a"), Request(pool="c", count=2)], seq=0)
    small = Ticket("small", "o", TicketState.WAITING, 1.0, None, pool="a", seq=1)
    plan = allocation.allocate([big, small], vms, pools(), {}, now=1.0)
    assert [(p.ticket, p.vm) for p in plan] == [("small", "a0")]


class Sim:
    """Tickets and VMs of the three pools moved through rounds of :func:`allocate`."""

    def __init__(self, sizes: dict[str, int], reserve_after: float | None) -> None:
        self.pools = pools(reserve_after=reserve_after)
        self.vms = {f"{p}{i}": ready(f"{p}{i}", p) for p, n in sizes.items() for i in range(n)}
        self.tickets: dict[str, Ticket] = {}
        self.assigned_at: dict[str, int] = {}

    def add(self, tid: str, now: int, parts: list[Request]) -> None:
        if len(parts) == 1 and parts[0].count == 1:  # a plain one-machine ticket
            self.tickets[tid] = Ticket(
                tid, "o", TicketState.WAITING, float(now), None, pool=parts[0].pool,
                tags=parts[0].tags, seq=len(self.tickets),
            )  # fmt: skip
        else:
            self.tickets[tid] = ticket(tid, parts, seq=len(self.tickets), created_at=now)

    def round(self, now: int) -> None:
        waiting = [t for t in self.tickets.values() if t.state is TicketState.WAITING]
        vms = list(self.vms.values())
        plan = allocation.allocate(waiting, vms, self.pools, {}, now=now)
        check(waiting, vms, plan, None)
        for a in plan:
            names = tuple(n for n, _ in a.vms)
            self.tickets[a.ticket] = self.tickets[a.ticket].with_state(
                TicketState.ASSIGNED, vms=names
            )
            self.assigned_at[a.ticket] = now
            for name in names:
                self.vms[name] = dataclasses.replace(
                    self.vms[name], state=VMState.IN_USE, load=1, ticket=a.ticket
                )

    def close(self, tid: str) -> None:
        t = self.tickets[tid]
        self.tickets[tid] = t.with_state(TicketState.CLOSED)
        for name in t.vms:
            self.vms[name] = dataclasses.replace(
                self.vms[name], state=VMState.READY, load=0, ticket=None
            )


BOUND = 5
HOLD = 3


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.fixed_dictionaries({p: st.integers(1, 3) for p in sorted(TAGS)}),
    big=st.lists(
        st.tuples(st.integers(0, 6), st.lists(ENTRIES, min_size=2, max_size=3)),
        min_size=1,
        max_size=3,
    ),
    arrivals=st.lists(st.sampled_from(["a", "b", "c", None]), min_size=30, max_size=30),
)
def test_competing_list_tickets_always_make_progress(
    sizes: dict[str, int],
    big: list[tuple[int, list[Request]]],
    arrivals: list[str | None],
) -> None:
    """List tickets spanning pools (each fitting the pools' sizes), competing with each other
    and with a stream of one-machine tickets (each held ``HOLD`` steps): every ticket is
    served — no two list tickets deadlock each holding part of what the other needs, and a
    list ticket is not starved by the stream: it waits at most ``BOUND`` plus one hold per
    ticket ahead of it. Breakage caught: no reservation past ``reserve_after`` (the stream
    keeps the free VMs from accumulating), reservations for one entry only, a partial
    assignment."""
    s = Sim(sizes, BOUND)
    bigs: dict[str, tuple[int, list[Request]]] = {}
    for i, (at, entries) in enumerate(big):
        options = [[p for p in sorted(TAGS) if fits(e, p)] for e in entries]
        room = {p: sizes[p] for p in TAGS}
        if allocation.fit_requests(entries, options, room) is not None:  # the server's check
            bigs[f"big{i}"] = (at, entries)
    ahead: dict[str, int] = {}
    for now in range(len(arrivals) + 80):
        for tid, (at, entries) in bigs.items():
            if at == now:
                ahead[tid] = sum(1 for t in s.tickets.values() if t.open)
                s.add(tid, now, entries)
        if now < len(arrivals) and arrivals[now] is not None:
            s.add(f"s{now}", now, [Request(pool=arrivals[now])])
        for tid, when in list(s.assigned_at.items()):
            if s.tickets[tid].state is TicketState.ASSIGNED and now - when >= HOLD:
                s.close(tid)
        s.round(now)
    for tid, t in s.tickets.items():
        assert t.state is not TicketState.WAITING, f"{tid} starved"
    for tid, (at, _) in bigs.items():
        waited = s.assigned_at[tid] - at
        limit = BOUND + (HOLD + 1) * (ahead[tid] + len(bigs) + 1)
        assert waited <= limit, f"{tid} waited {waited} > {limit}"


def test_before_the_bound_smaller_tickets_pass_a_list_ticket() -> None:
    """A list ticket wanting both ``c`` VMs and one ``a`` waits while a ``c`` VM is held; a
    later ``c`` ticket passes it before the bound, not after. Breakage caught: reserving at
    once (``reserve_after`` ignored) or never."""
    s = Sim({"a": 1, "b": 0, "c": 2}, BOUND)
    s.add("hog", 0, [Request(pool="c")])
    s.round(0)
    s.add("big", 0, [Request(pool="a"), Request(pool="c", count=2)])
    s.add("small", 1, [Request(pool="c")])
    s.round(1)
    assert s.tickets["small"].state is TicketState.ASSIGNED
    assert s.tickets["big"].state is TicketState.WAITING
    s.close("small")
    s.add("late", BOUND, [Request(pool="c")])
    s.add("late_a", BOUND, [Request(pool="a")])
    s.round(BOUND)
    assert s.tickets["late"].state is TicketState.WAITING, "past the bound: the list reserves"
    assert s.tickets["late_a"].state is TicketState.WAITING, "its a entry reserves too"
    s.close("hog")
    s.round(BOUND + 1)
    assert s.tickets["big"].state is TicketState.ASSIGNED


def test_a_list_ticket_routes_each_entry_to_its_pool_for_spawning() -> None:
    """Preallocation spawns for each entry in that entry's pool, its count of machines.
    Breakage caught: a list ticket routed once, to one pool (``split`` not applied)."""
    t = ticket("t", [Request(pool="a", count=2), Request(tags=("s390x",), count=3)])
    routed = allocation.route_tickets([t], list(pools().values()))
    assert [(x.id, x.count) for x in routed["a"]] == [("t", 2)]
    assert [(x.id, x.count) for x in routed["c"]] == [("t", 3)]
    assert routed["b"] == []


def test_fit_requests_gives_up_past_the_search_limit() -> None:
    """The search is bounded: 16 one-machine entries that fit any of 3 pools with room for 5
    each (15 in all) have no solution; the search returns ``None`` after
    ``SEARCH_LIMIT`` tries rather than trying all 3**16 choices. Breakage caught: an
    unbounded search (this test would run for many minutes)."""
    parts = [Request(tags=("x86",), count=1) for _ in range(16)]
    options = [["a", "b", "c"]] * 16
    assert allocation.fit_requests(parts, options, {"a": 5, "b": 5, "c": 5}) is None
    assert allocation.fit_requests(parts, options, {"a": 5, "b": 5, "c": 6}) is not None
