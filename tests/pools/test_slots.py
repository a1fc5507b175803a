"""Shared VMs (``slots``), exclusive tickets and multi-machine tickets in the pure planner.

Each test names the deliberate breakage of ``corral/pools/allocation.py`` it fails on.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.pools import allocation
from corral.pools.allocation import Assignment, PoolLimits
from corral.pools.model import VM, Ticket, TicketState, VMState

SLOTS = {"a": 3, "b": 1, "c": 2}


def limits(*, reserve_after: float | None = None) -> dict[str, PoolLimits]:
    """Three pools: ``a`` shares 3 tickets per VM, ``b`` none, ``c`` 2."""
    return {
        name: PoolLimits(
            name=name, tags=frozenset({"x"}), max=6, slots=slots, reserve_after=reserve_after
        )
        for name, slots in SLOTS.items()
    }


@st.composite
def vms(draw: st.DrawFn) -> list[VM]:
    result = []
    for i in range(draw(st.integers(0, 8))):
        pool = draw(st.sampled_from(sorted(SLOTS)))
        load = draw(st.integers(0, SLOTS[pool]))
        exclusive = load == 1 and draw(st.booleans())
        sandbox = draw(st.sampled_from([None, "s1", "s2"]))
        result.append(
            VM(
                name=f"vm{i}",
                pool=pool,
                state=VMState.IN_USE if load else VMState.READY,
                created_at=0.0,
                state_since=float(i),
                ready_at=float(i),
                uses=load if load else draw(st.sampled_from([0, 0, 1])),
                sandbox=sandbox if load or draw(st.booleans()) else None,
                load=load,
                exclusive=exclusive,
                ticket=f"old{i}" if load else None,
                tickets=tuple(f"old{i}-{k}" for k in range(load)),
            )
        )
    return [v if v.uses or v.load else dataclasses.replace(v, sandbox=None) for v in result]


@st.composite
def tickets(draw: st.DrawFn, *, multi: bool = True) -> list[Ticket]:
    return [
        Ticket(
            id=f"t{i}",
            owner=draw(st.sampled_from(["alice", "bob"])),
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
            pool=draw(st.sampled_from([None, "a", "b", "c"])),
            sandbox=draw(st.sampled_from([None, "s1", "s2"])),
            priority=draw(st.integers(0, 1)),
            seq=i,
            exclusive=draw(st.booleans()),
            count=draw(st.sampled_from([1, 1, 1, 2, 3])) if multi else 1,
        )
        for i in range(draw(st.integers(0, 10)))
    ]


def check_slots(ts: list[Ticket], vs: list[VM], plan: list[Assignment]) -> None:
    """The invariants every plan keeps (see :func:`allocation.allocate`)."""
    by_vm = {v.name: v for v in vs}
    by_ticket = {t.id: t for t in ts}
    load = {v.name: v.load for v in vs}
    exclusive = {v.name: v.exclusive for v in vs}
    seen: Counter[str] = Counter()
    for a in plan:
        seen[a.ticket] += 1
        ticket = by_ticket[a.ticket]
        names = [name for name, _ in a.vms]
        assert len(set(names)) == len(names) == ticket.count, "all of a ticket's VMs, distinct"
        assert len({by_vm[n].pool for n in names}) == 1, "one pool per multi-machine ticket"
        for name, expected in a.vms:
            vm = by_vm[name]
            assert expected == load[name], "the store's write is conditional on the true load"
            assert not exclusive[name], "nobody joins an exclusive ticket's VM"
            if ticket.exclusive:
                assert load[name] == 0, "an exclusive ticket shares with none"
            if load[name] > 0:
                assert vm.sandbox == ticket.sandbox or vm.load == 0, "joins keep one sandbox"
            load[name] += 1
            exclusive[name] = ticket.exclusive
            assert load[name] <= SLOTS[vm.pool], "never more than slots tickets on a VM"
    assert all(n == 1 for n in seen.values()), "one assignment per ticket"


@settings(max_examples=400, deadline=None)
@given(tickets(), vms())
def test_slots_never_exceeded_and_exclusive_never_shares(ts: list[Ticket], vs: list[VM]) -> None:
    """Breakages caught: dropping ``bucket.pop()`` when a shared VM is full (a 4th ticket on a
    3-slot VM), letting exclusive tickets join (``not ticket.exclusive`` removed from
    ``_choose``), a multi-machine ticket taking fewer VMs than asked."""
    plan = allocation.allocate(ts, vs, limits(), {})
    check_slots(ts, vs, plan)


@settings(max_examples=400, deadline=None)
@given(tickets(multi=False), vms())
def test_a_waiting_exclusive_ticket_blocks_later_joins(ts: list[Ticket], vs: list[VM]) -> None:
    """FIFO between shared and exclusive (SPEC §3): an exclusive ticket left waiting stops every
    later ticket from joining a shared VM of its pools. Breakage caught: not recording the
    blocked pools (a stream of shared tickets then keeps every shared VM busy for ever)."""
    pools = limits()
    plan = allocation.allocate(ts, vs, pools, {})
    assigned = {a.ticket: a for a in plan}
    order = sorted(ts, key=allocation.ticket_order)
    pool_of = {v.name: v.pool for v in vs}
    for i, ticket in enumerate(order):
        if not ticket.exclusive or ticket.id in assigned:
            continue
        blocked = set(allocation.pools_for(ticket, pools.values()))
        for later in order[i + 1 :]:
            a = assigned.get(later.id)
            if a is not None and a.load > 0:
                assert pool_of[a.vm] not in blocked, f"{later.id} joined past waiting {ticket.id}"


def test_shared_tickets_pack_a_vm_then_an_exclusive_one_takes_a_free_vm() -> None:
    """Three shared tickets share one 3-slot VM (packed: the other VM stays free for the
    exclusive ticket). Breakage caught: ``slots`` ignored (one VM per ticket)."""
    pools = limits()
    vs = [
        VM(name=f"v{i}", pool="a", state=VMState.READY, created_at=0.0, state_since=0.0)
        for i in range(2)
    ]
    ts = [
        Ticket(
            id=f"t{i}",
            owner="o",
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
            pool="a",
            seq=i,
            exclusive=i == 3,
        )
        for i in range(4)
    ]
    plan = allocation.allocate(ts, vs, pools, {})
    assert [(a.ticket, a.vm, a.load) for a in plan] == [
        ("t0", "v0", 0),
        ("t1", "v0", 1),
        ("t2", "v0", 2),
        ("t3", "v1", 0),
    ]


# --- rounds over time: the pure planner driving a fixed pool ---------------------------------


@dataclasses.dataclass
class Sim:
    """A fixed pool of VMs whose tickets come and go; every VM comes back fresh."""

    pools: dict[str, PoolLimits]
    vms: dict[str, VM]
    tickets: dict[str, Ticket] = dataclasses.field(default_factory=dict)
    holders: dict[str, list[str]] = dataclasses.field(default_factory=lambda: defaultdict(list))
    assigned_at: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, tid: str, now: int, *, count: int = 1, exclusive: bool = False) -> None:
        self.tickets[tid] = Ticket(
            id=tid,
            owner="o",
            state=TicketState.WAITING,
            created_at=float(now),
            expires_at=None,
            pool="a",
            seq=len(self.tickets),
            count=count,
            exclusive=exclusive,
        )

    def round(self, now: int) -> None:
        waiting = [t for t in self.tickets.values() if t.state is TicketState.WAITING]
        plan = allocation.allocate(waiting, list(self.vms.values()), self.pools, {}, now=now)
        check_slots(waiting, list(self.vms.values()), plan)
        for a in plan:
            ticket = self.tickets[a.ticket]
            names = tuple(name for name, _ in a.vms)
            self.tickets[a.ticket] = ticket.with_state(TicketState.ASSIGNED, vms=names)
            self.assigned_at[a.ticket] = now
            for name in names:
                vm = self.vms[name]
                self.holders[name].append(a.ticket)
                self.vms[name] = dataclasses.replace(
                    vm,
                    state=VMState.IN_USE,
                    load=vm.load + 1,
                    exclusive=ticket.exclusive,
                    ticket=self.holders[name][0],
                )

    def close(self, tid: str) -> None:
        ticket = self.tickets[tid]
        self.tickets[tid] = ticket.with_state(TicketState.CLOSED)
        for name in ticket.vms:
            self.holders[name].remove(tid)
            vm = self.vms[name]
            left = vm.load - 1
            self.vms[name] = dataclasses.replace(
                vm,
                state=VMState.IN_USE if left else VMState.READY,
                load=left,
                exclusive=vm.exclusive and left > 0,
                ticket=self.holders[name][0] if left else None,
            )


def sim(size: int, slots: int, reserve_after: float | None) -> Sim:
    pools = {
        "a": PoolLimits(
            name="a", tags=frozenset(), max=size, slots=slots, reserve_after=reserve_after
        )
    }
    vms = {
        f"v{i}": VM(name=f"v{i}", pool="a", state=VMState.READY, created_at=0.0, state_since=0.0)
        for i in range(size)
    }
    return Sim(pools, vms)


BOUND = 5
HOLD = 3


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(2, 4),
    slots=st.integers(1, 2),
    big=st.lists(st.tuples(st.integers(0, 5), st.integers(2, 4), st.booleans()), max_size=3),
    arrivals=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_competing_multi_machine_tickets_always_make_progress(
    size: int,
    slots: int,
    big: list[tuple[int, int, bool]],
    arrivals: list[bool],
) -> None:
    """Multi-machine tickets of up to the whole pool, under a stream of small tickets that
    keeps coming (each held ``HOLD`` steps): every ticket is served (no deadlock: nothing is
    held partially), and a multi-machine one within ``BOUND`` plus one hold per ticket ahead
    of it when it came. Breakage caught: no reservation past ``reserve_after`` (the stream
    keeps a free VM from accumulating, and the large ticket waits until it stops), and a
    partial assignment (a big ticket holding part of the pool)."""
    s = sim(size, slots, BOUND)
    bigs = {f"big{i}": (at, min(n, size), ex) for i, (at, n, ex) in enumerate(big)}
    ahead: dict[str, int] = {}
    for now in range(len(arrivals) + 60):
        for tid, (at, n, ex) in bigs.items():
            if at == now:
                ahead[tid] = sum(1 for t in s.tickets.values() if t.open)
                s.add(tid, now, count=n, exclusive=ex)
        if now < len(arrivals) and now % 2 == 0:
            s.add(f"s{now}", now, exclusive=arrivals[now])
        for tid, when in list(s.assigned_at.items()):
            if s.tickets[tid].state is TicketState.ASSIGNED and now - when >= HOLD:
                s.close(tid)
        s.round(now)
    for tid, ticket in s.tickets.items():
        assert ticket.state is not TicketState.WAITING, f"{tid} starved"
    for tid, (at, _, _) in bigs.items():
        waited = s.assigned_at[tid] - at
        limit = BOUND + (HOLD + 1) * (ahead[tid] + len(bigs) + 1)
        assert waited <= limit, f"{tid} waited {waited} > {limit}"


def test_before_the_bound_smaller_tickets_pass_a_multi_machine_ticket() -> None:
    """A 3-machine ticket on a pool with 2 free VMs waits; a later 1-machine ticket passes it
    until the bound, and not after. Breakage caught: reserving at once (``reserve_after``
    ignored) or never."""
    s = sim(3, 1, BOUND)
    s.add("hog", 0)
    s.round(0)
    s.add("big", 0, count=3)
    s.add("small", 1)
    s.round(1)
    assert s.tickets["small"].state is TicketState.ASSIGNED
    assert s.tickets["big"].state is TicketState.WAITING
    s.close("small")
    s.add("late", BOUND)
    s.round(BOUND)
    assert s.tickets["late"].state is TicketState.WAITING, "past the bound: the big one reserves"
    s.close("hog")
    s.round(BOUND + 1)
    assert s.tickets["big"].state is TicketState.ASSIGNED
    assert s.tickets["late"].state is TicketState.WAITING
