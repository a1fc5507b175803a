"""The allocation and preallocation decisions, pure (SPEC §5).

Given tickets, VMs, limits and ``now``, these functions say which ticket gets which VM, how many VMs
to spawn and which VMs to terminate. They return data; the controller performs the writes (each
assignment is one atomic conditional write in the store) and the backend calls. This module must not
do I/O, read a clock, or import the store, the backends or asyncio.

Rules (Copr's ``acquire_vm`` and resalloc's matching, with their gaps closed):

- a VM qualifies for a ticket when it is in the ticket's pool (if one is named) and the ticket's
  tags are a subset of the VM's pool's tags;
- among qualifying ready VMs, one whose last sandbox equals the ticket's sandbox comes first, then
  a fresh (never used) VM; a VM used by one sandbox is never handed to another sandbox, nor to a
  ticket without a sandbox;
- tickets are served by priority (higher first), then age (lower ``seq`` first);
- among pools that can serve a ticket, the one preferring the ticket's tags most
  (``tag_priority``, resalloc's tag priorities: cheap pools first, expensive cloud last) is chosen
  first, below sandbox affinity (a VM of the ticket's sandbox in a less preferred pool wins);
- an owner at its pool's ``max_per_owner`` waits for that pool; nobody else is held up by it;
- a list ticket (``requests``: several pool or tag entries, each with its count) gets a VM for
  every entry in one assignment or none, each entry from one pool that fits it, like ``count``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from corral.pools.lifecycle import ALIVE_VM_STATES
from corral.pools.model import VM, Request, Ticket, TicketState, VMState


@dataclass(frozen=True, slots=True)
class Assignment:
    """Give VM ``vm`` (and ``others``) to ticket ``ticket``."""

    ticket: str
    vm: str
    load: int = 0
    """How many tickets held ``vm`` when it was chosen: 0 for a free VM, more when the ticket
    joins a shared one. The store's write is conditional on it."""
    others: tuple[tuple[str, int], ...] = ()
    """The further VMs of a multi-machine ticket, with their loads (see ``load``)."""

    @property
    def vms(self) -> tuple[tuple[str, int], ...]:
        """Every ``(vm, load)`` of this assignment, ``vm`` first."""
        return ((self.vm, self.load), *self.others)


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """The part of a pool's configuration the decisions need (see ``corral.pools.config``)."""

    name: str
    tags: frozenset[str] = frozenset()
    tag_priority: tuple[tuple[str, int], ...] = ()
    """``(tag, priority)`` pairs: this pool's preference for tickets asking for these tags."""
    max: int = 10
    max_starting: int = 4
    min_ready: int = 0
    max_per_owner: int | None = None
    reuse_sandbox: bool = False
    max_uses: int | None = None
    max_age: float | None = None
    idle_timeout: float | None = None
    slots: int = 1
    """Tickets one VM serves at once (1: a VM serves one ticket)."""
    reserve_after: float | None = None
    """A multi-machine ticket waiting this long reserves free VMs as they come (``None``:
    never; smaller tickets may always pass it)."""

    def preference(self, tags: Iterable[str]) -> int:
        """How much this pool prefers a ticket asking for ``tags`` (the sum of their
        priorities; 0 without ``tag_priority``)."""
        if not self.tag_priority:
            return 0  # the common case; this runs per waiting ticket and pool on every round
        priorities = dict(self.tag_priority)
        return sum(priorities.get(tag, 0) for tag in set(tags))


@dataclass(frozen=True, slots=True)
class Termination:
    """Terminate VM ``vm`` of its pool, for ``reason`` (``max_age``, ``max_uses``, ...)."""

    vm: str
    reason: str


def ticket_order(ticket: Ticket) -> tuple[int, int]:
    """The serving order of tickets: priority (higher first), then age."""
    return (-ticket.priority, ticket.seq)


def pools_for(ticket: Ticket, pools: Iterable[PoolLimits]) -> list[str]:
    """Names of the pools that can serve ``ticket``, the most preferred first (see
    :meth:`PoolLimits.preference`), then by name. For a list ticket: the pools that can serve
    any of its entries, those of its first entry first."""
    if not ticket.requests:
        return request_pools(Request(ticket.pool, ticket.tags, ticket.count), pools)
    found: dict[str, None] = {}
    every = list(pools)
    for request in ticket.requests:
        found.update(dict.fromkeys(request_pools(request, every)))
    return list(found)


def request_pools(request: Request, pools: Iterable[PoolLimits]) -> list[str]:
    """Names of the pools that can serve one entry of a ticket (its pool, if named, and its
    tags), the most preferred first, then by name."""
    wanted = frozenset(request.tags)
    matching = [
        p for p in pools if (request.pool is None or request.pool == p.name) and wanted <= p.tags
    ]
    return [p.name for p in sorted(matching, key=lambda p: (-p.preference(wanted), p.name))]


SEARCH_LIMIT = 10_000
"""The most pool choices one round tries for one list ticket (its entries times the pools that
fit each could be many): past it, the ticket waits for the next round."""


def _vm_order(vm: VM) -> tuple[float, str]:
    return (vm.ready_at if vm.ready_at is not None else vm.state_since, vm.name)


_Key = tuple[str, str | None]
"""A bucket of VMs: ``(pool, sandbox)`` (sandbox ``None``: fresh VMs, or shared VMs serving
tickets without a sandbox)."""


def allocate(
    tickets: Iterable[Ticket],
    vms: Iterable[VM],
    pools: Mapping[str, PoolLimits],
    held: Mapping[tuple[str, str], int],
    *,
    now: float | None = None,
) -> list[Assignment]:
    """Decide which waiting tickets get which VMs.

    ``held`` counts the tickets each ``(owner, pool)`` holds already (assigned, not closed; a
    multi-machine ticket counts once per machine). Tickets that are not waiting and VMs that
    are neither free and ready nor shared with room left are ignored, so the caller may pass a
    superset. The result never puts more than the pool's ``slots`` tickets on a VM, never
    shares a VM with an exclusive ticket, never gives one ticket the same VM twice, and gives a
    multi-machine ticket all its ``count`` VMs of one pool or none, and a list ticket a VM for
    each of its entries (each entry's VMs from one pool that fits it) or none.

    Shared and exclusive tickets are served first come, first served (by priority, then
    age): an exclusive ticket that finds no free VM stops every later ticket from joining a
    shared VM of its pools, as a waiting exclusive lock blocks later shared ones, so the
    shared VMs drain and it is not starved. A multi-machine ticket that cannot be served is
    passed by smaller ones until it has waited its pool's ``reserve_after`` (measured from
    ``now``; never without it): from then on it reserves the free VMs it could use, which no
    later ticket takes, and blocks joins in that pool, until it has them all. A list ticket
    does the same entry by entry, in the most preferred pool of each entry whose
    ``reserve_after`` it has waited (the oldest such ticket first: it is never starved, and two
    of them never each hold back part of what the other needs, as reservations are decided
    afresh each round in one order).
    """
    buckets: dict[_Key, list[VM]] = defaultdict(list)
    shared: dict[_Key, list[VM]] = defaultdict(list)
    loads: dict[str, int] = {}
    for vm in vms:
        limits = pools.get(vm.pool)
        if limits is None:
            continue
        if vm.state is VMState.READY and vm.ticket is None:
            key = None if vm.fresh else vm.sandbox
            if not vm.fresh and key is None:
                continue  # used by a sandbox-less ticket: serves nobody again
            buckets[(vm.pool, key)].append(vm)
        elif (
            vm.state is VMState.IN_USE
            and not vm.exclusive
            and 0 < vm.load < limits.slots
            and vm.ticket is not None
        ):
            shared[(vm.pool, vm.sandbox)].append(vm)
            loads[vm.name] = vm.load
    for bucket in buckets.values():
        bucket.sort(key=_vm_order, reverse=True)  # pop() from the end takes the oldest
    for bucket in shared.values():
        bucket.sort(key=lambda v: (v.load, _vm_order(v)))  # the fullest last: packed first
    state = _Round(buckets, shared, loads, pools, dict(held))
    result: list[Assignment] = []
    for ticket in sorted(tickets, key=ticket_order):
        if ticket.state is not TicketState.WAITING:
            continue
        if ticket.requests:
            done = state.several(ticket, now)
        elif ticket.count == 1:
            done = state.one(ticket)
        else:
            done = state.many(ticket, now)
        if done is not None:
            result.append(done)
    return result


@dataclass(slots=True)
class _Round:
    """The VMs left to hand out during one :func:`allocate` call, and what blocks what."""

    buckets: dict[_Key, list[VM]]
    shared: dict[_Key, list[VM]]
    loads: dict[str, int]
    pools: Mapping[str, PoolLimits]
    counts: dict[tuple[str, str], int]
    blocked: set[str] = field(default_factory=set)
    """Pools in which a waiting exclusive or reserving ticket stops later tickets joining."""

    def _room(self, ticket: Ticket, pool: str) -> bool:
        limit = self.pools[pool].max_per_owner
        return limit is None or self.counts.get((ticket.owner, pool), 0) + ticket.count <= limit

    def _take(self, ticket: Ticket, vm: VM) -> None:
        key = (ticket.owner, vm.pool)
        self.counts[key] = self.counts.get(key, 0) + 1
        if not ticket.exclusive and self.pools[vm.pool].slots > 1:
            # a VM just taken by a shared ticket can be joined by later tickets of its sandbox
            self.loads[vm.name] = 1
            self.shared[(vm.pool, ticket.sandbox)].append(vm)

    def one(self, ticket: Ticket) -> Assignment | None:
        """Serve a one-machine ticket, or note what its waiting blocks."""
        choice = _choose(ticket, self)
        if choice is None:
            if ticket.exclusive:
                self.blocked.update(
                    p for p in pools_for(ticket, self.pools.values()) if self._room(ticket, p)
                )
            return None
        joining, key = choice
        if joining:
            bucket = self.shared[key]
            vm = bucket[-1]
            load = self.loads[vm.name]
            self.loads[vm.name] = load + 1
            if load + 1 >= self.pools[vm.pool].slots:
                bucket.pop()
            self.counts[(ticket.owner, vm.pool)] = self.counts.get((ticket.owner, vm.pool), 0) + 1
            return Assignment(ticket=ticket.id, vm=vm.name, load=load)
        vm = self.buckets[key].pop()
        self._take(ticket, vm)
        return Assignment(ticket=ticket.id, vm=vm.name)

    def _free_for(self, ticket: Ticket, pool: str) -> list[list[VM]]:
        sources = [self.buckets.get((pool, None), [])]
        if ticket.sandbox is not None:
            sources.insert(0, self.buckets.get((pool, ticket.sandbox), []))
        return sources

    def many(self, ticket: Ticket, now: float | None) -> Assignment | None:
        """Serve a multi-machine ticket with free VMs of one pool, all or none; past its
        pool's ``reserve_after``, reserve what it could use instead."""
        eligible = [p for p in pools_for(ticket, self.pools.values()) if self._room(ticket, p)]
        for pool in eligible:
            sources = self._free_for(ticket, pool)
            if sum(len(s) for s in sources) < ticket.count:
                continue
            taken: list[VM] = []
            for source in sources:
                while source and len(taken) < ticket.count:
                    taken.append(source.pop())
            for vm in taken:
                self._take(ticket, vm)
            first, *rest = taken
            return Assignment(ticket.id, first.name, 0, tuple((v.name, 0) for v in rest))
        if eligible and now is not None:
            pool = eligible[0]
            bound = self.pools[pool].reserve_after
            if bound is not None and now - ticket.created_at >= bound:
                left = ticket.count
                for source in self._free_for(ticket, pool):
                    while source and left:
                        source.pop()  # reserved: no later ticket takes it this round
                        left -= 1
                self.blocked.add(pool)
        return None

    def several(self, ticket: Ticket, now: float | None) -> Assignment | None:
        """Serve a list ticket: free VMs for every entry (each entry from one pool), all or
        none; past a pool's ``reserve_after``, reserve what its entries could use there."""
        parts = ticket.requests
        options = [request_pools(r, self.pools.values()) for r in parts]
        plan = self._fit(ticket, parts, options)
        if plan is not None:
            taken: list[VM] = []
            for request, pool in zip(parts, plan, strict=True):
                left = request.count
                for source in self._free_for(ticket, pool):
                    while source and left:
                        taken.append(source.pop())
                        left -= 1
            for vm in taken:
                self._take(ticket, vm)
            first, *rest = taken
            return Assignment(ticket.id, first.name, 0, tuple((v.name, 0) for v in rest))
        if now is None:
            return None
        wanted: dict[str, int] = {}
        for request, names in zip(parts, options, strict=True):
            roomy = [
                p for p in names if self._fits_owner(ticket, p, request.count + wanted.get(p, 0))
            ]
            if roomy:
                wanted[roomy[0]] = wanted.get(roomy[0], 0) + request.count
        for pool, left in wanted.items():
            bound = self.pools[pool].reserve_after
            if bound is None or now - ticket.created_at < bound:
                continue
            for source in self._free_for(ticket, pool):
                while source and left:
                    source.pop()  # reserved: no later ticket takes it this round
                    left -= 1
            self.blocked.add(pool)
        return None

    def _fits_owner(self, ticket: Ticket, pool: str, machines: int) -> bool:
        limit = self.pools[pool].max_per_owner
        return limit is None or self.counts.get((ticket.owner, pool), 0) + machines <= limit

    def _fit(
        self, ticket: Ticket, parts: Sequence[Request], options: Sequence[Sequence[str]]
    ) -> list[str] | None:
        """A pool for each entry with enough free VMs, and room under the owner's
        ``max_per_owner``, for all the entries given it (see :func:`fit_requests`)."""
        room: dict[str, int] = {}
        for names in options:
            for pool in names:
                free = sum(len(s) for s in self._free_for(ticket, pool))
                limit = self.pools[pool].max_per_owner
                if limit is not None:
                    free = min(free, limit - self.counts.get((ticket.owner, pool), 0))
                room[pool] = free
        return fit_requests(parts, options, room)


def fit_requests(
    parts: Sequence[Request], options: Sequence[Sequence[str]], room: Mapping[str, int]
) -> list[str] | None:
    """A pool for each entry of a list ticket (``options[i]``: the pools that fit entry ``i``,
    the preferred first) such that no pool is given more machines than its ``room``, or
    ``None`` (also past :data:`SEARCH_LIMIT` tries): a depth-first search, the entries with the
    fewest pools first."""
    order = sorted(range(len(parts)), key=lambda i: (len(options[i]), i))
    used: dict[str, int] = {}
    chosen: dict[int, str] = {}
    budget = [SEARCH_LIMIT]

    def search(k: int) -> bool:
        if k == len(order):
            return True
        i = order[k]
        need = parts[i].count
        for pool in options[i]:
            budget[0] -= 1
            if budget[0] < 0:
                return False
            total = used.get(pool, 0) + need
            if total > room.get(pool, 0):
                continue
            used[pool] = total
            chosen[i] = pool
            if search(k + 1):
                return True
            used[pool] = total - need
        return False

    return [chosen[i] for i in range(len(parts))] if search(0) else None


def _choose(ticket: Ticket, state: _Round) -> tuple[bool, _Key] | None:
    """The bucket a one-machine ticket takes from: ``(joining, key)`` (joining: a shared VM
    with room), or ``None``."""
    best: tuple[tuple[int, int, float, str], tuple[bool, _Key]] | None = None
    for pool in pools_for(ticket, state.pools.values()):
        limits = state.pools[pool]
        preference = limits.preference(ticket.tags)
        if not state._room(ticket, pool):
            continue
        keys: list[tuple[int, bool, _Key]] = [(2, False, (pool, None))]
        if ticket.sandbox is not None:
            keys.insert(0, (1, False, (pool, ticket.sandbox)))
        if limits.slots > 1 and not ticket.exclusive and pool not in state.blocked:
            keys.insert(0, (0, True, (pool, ticket.sandbox)))
        for rank, joining, key in keys:
            bucket = (state.shared if joining else state.buckets).get(key)
            if not bucket:
                continue
            when, name = _vm_order(bucket[-1])
            candidate = ((rank, -preference, when, name), (joining, key))
            if best is None or candidate[0] < best[0]:
                best = candidate
    return None if best is None else best[1]


def route_tickets(
    tickets: Iterable[Ticket], pools: Sequence[PoolLimits]
) -> dict[str, list[Ticket]]:
    """The waiting tickets each pool should spawn for.

    A ticket counts for one pool only: the most preferred matching pool (then the first by
    name), so a cheap pool spawns before an expensive one. A list ticket counts once per entry,
    in that entry's pool, as a ticket of that pool with that entry's tags and count. Tickets of
    owners at their limit are the caller's to leave out.
    """
    routed: dict[str, list[Ticket]] = {p.name: [] for p in pools}
    for ticket in tickets:
        if ticket.state is not TicketState.WAITING:
            continue
        for part in split(ticket):
            names = pools_for(part, pools)
            if names:
                routed[names[0]].append(part)
    return routed


def split(ticket: Ticket) -> list[Ticket]:
    """A list ticket as one ticket per entry (same id, owner, sandbox, priority and age; the
    entry's pool, tags and count); any other ticket as itself."""
    if not ticket.requests:
        return [ticket]
    return [
        replace(ticket, pool=r.pool, tags=r.tags, count=r.count, requests=())
        for r in ticket.requests
    ]


def route_demand(tickets: Iterable[Ticket], pools: Sequence[PoolLimits]) -> dict[str, int]:
    """How many waiting tickets each pool should spawn for (see :func:`route_tickets`)."""
    return {name: len(found) for name, found in route_tickets(tickets, pools).items()}


@dataclass(frozen=True, slots=True)
class IdleVM:
    """A free ready VM that served tickets before: supply only for its sandbox."""

    name: str
    sandbox: str | None
    last_used_at: float | None = None


@dataclass(frozen=True, slots=True)
class SupplyPlan:
    """How many VMs to spawn now, and which idle used VMs to terminate to make room."""

    spawn: int
    evict: tuple[str, ...] = ()


def plan_supply(
    limits: PoolLimits,
    counts: Mapping[VMState, int],
    demand: Sequence[str | None] = (),
    idle_used: Sequence[IdleVM] = (),
    expected: int = 0,
) -> SupplyPlan:
    """How many VMs to spawn now, and which idle used VMs to evict for waiting tickets.

    ``demand`` holds the sandbox (or ``None``) of each waiting ticket this pool serves;
    ``idle_used`` the pool's free ready VMs that served a ticket before, least recently used
    first. Only *fresh* ready VMs count as supply for ``min_ready`` and for tickets: an idle used
    VM serves one ticket of its own sandbox and nobody else (resalloc's #52: counting them as
    ready starves every other ticket). The pool keeps ``min_ready`` fresh VMs plus one per ticket
    no VM can serve, counting VMs being spawned, within ``max_starting`` spawns in flight and
    ``max`` VMs alive (terminating ones count: the backend still has them). When ``max`` blocks a
    ticket, the least recently used idle VMs no waiting ticket can use are terminated (beyond the
    VMs already terminating, which free room anyway), so a fresh VM can be spawned.

    ``expected`` is how many spawns the measured demand needs in flight
    (:func:`corral.pools.demand.in_flight`): the pool spawns for the larger of it and the tickets
    waiting now, so a burst is served at the rate the limits allow, not one spawn per waiter.
    """
    spare = list(idle_used)
    unserved = 0
    for sandbox in demand:
        match = next((i for i, v in enumerate(spare) if sandbox and v.sandbox == sandbox), None)
        if match is None:
            unserved += 1
        else:
            del spare[match]  # this ticket takes that VM: not supply for anybody else
    spawning = counts.get(VMState.SPAWNING, 0)
    fresh = max(0, counts.get(VMState.READY, 0) - len(idle_used))
    alive = sum(counts.get(s, 0) for s in ALIVE_VM_STATES)
    need = limits.min_ready + max(unserved, expected) - fresh - spawning
    room_starting = limits.max_starting - spawning
    room_total = limits.max - alive
    spawn = max(0, min(need, room_starting, room_total))
    short = max(0, min(unserved - fresh - spawning, room_starting) - spawn)
    evict = max(0, short - counts.get(VMState.TERMINATING, 0))
    return SupplyPlan(spawn=spawn, evict=tuple(v.name for v in spare[:evict]))


def supply_blocked(limits: PoolLimits, counts: Mapping[VMState, int]) -> bool:
    """True when :func:`plan_supply` spawns and evicts nothing whatever the demand: the pool
    has ``max_starting`` spawns in flight, or it is at ``max`` with no ready VM (only a ready VM
    can be evicted). A pool with a thousand waiters is in one of these states, so the caller
    need not read its waiting tickets at all (issue 8 item 3)."""
    spawning = counts.get(VMState.SPAWNING, 0)
    alive = sum(counts.get(s, 0) for s in ALIVE_VM_STATES)
    if limits.max_starting - spawning <= 0:
        return True
    return limits.max - alive <= 0 and counts.get(VMState.READY, 0) == 0


def plan_spawns(limits: PoolLimits, counts: Mapping[VMState, int], demand: int = 0) -> int:
    """How many VMs to spawn now for ``demand`` waiting tickets with no sandbox VM to serve
    them, when every ready VM is fresh (see :func:`plan_supply`)."""
    return plan_supply(limits, counts, [None] * demand).spawn


def expired_reason(limits: PoolLimits, vm: VM, now: float) -> str | None:
    """Why an idle ready VM must go now (``max_age``, ``max_uses``, ``idle_timeout``), or None."""
    if limits.max_age is not None and now - vm.created_at >= limits.max_age:
        return "max_age"
    if limits.max_uses is not None and vm.uses >= limits.max_uses:
        return "max_uses"
    if (
        limits.idle_timeout is not None
        and not vm.fresh
        and now - (vm.last_used_at if vm.last_used_at is not None else vm.state_since)
        >= limits.idle_timeout
    ):
        return "idle_timeout"
    return None


def plan_terminations(
    limits: PoolLimits,
    vms: Sequence[VM],
    now: float,
    *,
    alive: int | None = None,
    keep_fresh: int | None = None,
    surplus_after: float = 30.0,
) -> list[Termination]:
    """Which idle ready VMs of one pool to terminate: past their age, uses or idle time, the
    oldest idle ones beyond ``max`` (after the configuration shrank), and — with ``keep_fresh``
    — fresh VMs beyond that many that have been ready for ``surplus_after`` seconds (spawned for
    demand that went away).

    ``alive`` is the pool's count of alive VMs when ``vms`` holds only some of them (the ready
    ones); by default it is counted from ``vms``.
    """
    idle = sorted(
        (v for v in vms if v.pool == limits.name and v.state is VMState.READY and v.ticket is None),
        key=_vm_order,
    )
    if alive is None:
        alive = sum(1 for v in vms if v.pool == limits.name and v.alive)
    result: list[Termination] = []
    keep: list[VM] = []
    for vm in idle:
        reason = expired_reason(limits, vm, now)
        if reason is None:
            keep.append(vm)
        else:
            result.append(Termination(vm=vm.name, reason=reason))
    excess = max(0, alive - limits.max)
    for vm in keep[:excess]:
        result.append(Termination(vm=vm.name, reason="over_max"))
    if keep_fresh is not None:
        fresh = [v for v in keep[excess:] if v.fresh]
        surplus = fresh[: max(0, len(fresh) - keep_fresh)]  # the oldest ready first
        for vm in surplus:
            ready_since = vm.ready_at if vm.ready_at is not None else vm.state_since
            if now - ready_since >= surplus_after:
                result.append(Termination(vm=vm.name, reason="surplus"))
    return result


def may_reuse(limits: PoolLimits, vm: VM, sandbox: str | None, now: float) -> bool:
    """True if a VM whose ticket (with ``sandbox``) just closed may go back to the pool.

    Only VMs served to a sandbox are reused (the next ticket of that sandbox gets them); a VM past
    ``max_uses`` or ``max_age`` is terminated instead.
    """
    if not limits.reuse_sandbox or sandbox is None:
        return False
    if limits.max_uses is not None and vm.uses >= limits.max_uses:
        return False
    return not (limits.max_age is not None and now - vm.created_at >= limits.max_age)
