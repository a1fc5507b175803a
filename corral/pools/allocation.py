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
- an owner at its pool's ``max_per_owner`` waits for that pool; nobody else is held up by it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from corral.pools.lifecycle import ALIVE_VM_STATES
from corral.pools.model import VM, Ticket, TicketState, VMState


@dataclass(frozen=True, slots=True)
class Assignment:
    """Give VM ``vm`` to ticket ``ticket``."""

    ticket: str
    vm: str


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

    def preference(self, tags: Iterable[str]) -> int:
        """How much this pool prefers a ticket asking for ``tags`` (the sum of their
        priorities; 0 without ``tag_priority``)."""
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
    :meth:`PoolLimits.preference`), then by name."""
    wanted = frozenset(ticket.tags)
    matching = [
        p for p in pools if (ticket.pool is None or ticket.pool == p.name) and wanted <= p.tags
    ]
    return [p.name for p in sorted(matching, key=lambda p: (-p.preference(wanted), p.name))]


def _vm_order(vm: VM) -> tuple[float, str]:
    return (vm.ready_at if vm.ready_at is not None else vm.state_since, vm.name)


def allocate(
    tickets: Iterable[Ticket],
    vms: Iterable[VM],
    pools: Mapping[str, PoolLimits],
    held: Mapping[tuple[str, str], int],
) -> list[Assignment]:
    """Decide which waiting tickets get which ready VMs.

    ``held`` counts the tickets each ``(owner, pool)`` holds already (assigned, not closed).
    Tickets that are not waiting and VMs that are not ready and free are ignored, so the caller may
    pass a superset. The result never gives one VM to two tickets nor two VMs to one ticket.
    """
    buckets: dict[tuple[str, str | None], list[VM]] = defaultdict(list)
    for vm in vms:
        if vm.state is not VMState.READY or vm.ticket is not None or vm.pool not in pools:
            continue
        key = None if vm.fresh else vm.sandbox
        if not vm.fresh and key is None:
            continue  # used by a sandbox-less ticket: serves nobody again
        buckets[(vm.pool, key)].append(vm)
    for bucket in buckets.values():
        bucket.sort(key=_vm_order, reverse=True)  # pop() from the end takes the oldest
    counts: dict[tuple[str, str], int] = dict(held)
    result: list[Assignment] = []
    for ticket in sorted(tickets, key=ticket_order):
        if ticket.state is not TicketState.WAITING:
            continue
        choice = _choose(ticket, buckets, pools, counts)
        if choice is None:
            continue
        bucket = buckets[choice]
        vm = bucket.pop()
        counts[(ticket.owner, vm.pool)] = counts.get((ticket.owner, vm.pool), 0) + 1
        result.append(Assignment(ticket=ticket.id, vm=vm.name))
    return result


def _choose(
    ticket: Ticket,
    buckets: Mapping[tuple[str, str | None], list[VM]],
    pools: Mapping[str, PoolLimits],
    counts: Mapping[tuple[str, str], int],
) -> tuple[str, str | None] | None:
    best: tuple[tuple[int, int, float, str], tuple[str, str | None]] | None = None
    for pool in pools_for(ticket, pools.values()):
        preference = pools[pool].preference(ticket.tags)
        limit = pools[pool].max_per_owner
        if limit is not None and counts.get((ticket.owner, pool), 0) >= limit:
            continue
        keys: list[tuple[int, str | None]] = [(1, None)]
        if ticket.sandbox is not None:
            keys.insert(0, (0, ticket.sandbox))
        for rank, key in keys:
            bucket = buckets.get((pool, key))
            if not bucket:
                continue
            when, name = _vm_order(bucket[-1])
            candidate = ((rank, -preference, when, name), (pool, key))
            if best is None or candidate[0] < best[0]:
                best = candidate
    return None if best is None else best[1]


def route_tickets(
    tickets: Iterable[Ticket], pools: Sequence[PoolLimits]
) -> dict[str, list[Ticket]]:
    """The waiting tickets each pool should spawn for.

    A ticket counts for one pool only: the most preferred matching pool (then the first by
    name), so a cheap pool spawns before an expensive one. Tickets of owners at
    their limit are the caller's to leave out.
    """
    routed: dict[str, list[Ticket]] = {p.name: [] for p in pools}
    for ticket in tickets:
        if ticket.state is not TicketState.WAITING:
            continue
        names = pools_for(ticket, pools)
        if names:
            routed[names[0]].append(ticket)
    return routed


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
