"""Assignment: match waiting tickets with ready VMs, event-driven, one atomic write per ticket.

Kicked by a ticket created, a VM ready, a ticket closed; one coalesced runner reads the inputs in
one store transaction (a bounded read), lets :func:`corral.pools.allocation.allocate` decide and
performs each decision as the store's conditional assignment. A write that loses a race (another
process was faster) just makes the runner decide again. This module must not decide itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corral.controller import ports, records
from corral.controller.events import Event
from corral.controller.runner import Coalescer
from corral.pools import allocation
from corral.pools.lifecycle import VM_RULES, VMEvent, vm_target
from corral.pools.model import VM, Ticket, TicketState
from corral.store.pools import AllocationInputs, AssignWrite, TicketRow
from corral.types import JSON

_VM_TAKEN = str(vm_target(VMEvent.ASSIGNED))
"""The state the store's assignment moves a VM to."""
_TAKEABLE = tuple(str(state) for state in VM_RULES[VMEvent.ASSIGNED].sources)
"""The states of a VM an assignment can take (in a pool of single-ticket VMs), from the table."""

log = logging.getLogger(__name__)

HANDED_LIMIT = 4096
"""VMs remembered as handed out by :meth:`Assigner.handed_out` (the oldest forgotten first)."""


class Assigner:
    """Assigns tickets; one coalesced runner."""

    def __init__(self, controller: ports.AssignerHost) -> None:
        self._ctl = controller
        # The last round found tickets waiting and no VM for them: until a VM is ready, a
        # round first counts ready VMs (one small read) rather than reading the queue. A
        # round that found VMs does not count first: a warm pool pays no extra read.
        self._starved = False
        self._runner: Coalescer[None] = Coalescer(
            "assignment", self._work, on_error=self._retry_later
        )
        # The VMs this assigner handed out, as the round that did it read them: the answer to
        # the ticket's create or long-poll gives their address without reading them again.
        self._handed: OrderedDict[str, VM] = OrderedDict()
        self._closed = False
        # No ticket waits: the last round (or create's unit) left none waiting and no ticket
        # was inserted since it read. Tickets only ever enter ``waiting`` by an insert, and on
        # a store of this controller's own every insert is :meth:`insert`, so while this holds
        # a kick for a VM made ready or a ticket closed has nothing to serve (issue 14).
        self._none_waiting = False
        self._inserts = 0
        # Inserts started and not finished: a round that began while one was in flight may
        # have read before its commit, so it cannot conclude that no ticket waits.
        self._inserting = 0
        self._inserts_running: set[asyncio.Task[Ticket | None]] = set()

    def handed_out(self, name: str) -> VM | None:
        """VM ``name`` as the assignment round that handed it out read it (``None`` when this
        assigner did not hand it out recently). Its address and handle are fixed once it is up;
        its other fields (state, ticket) may have moved on since."""
        return self._handed.get(name)

    @property
    def idle(self) -> bool:
        """True when no assignment round is pending or running."""
        return self._runner.idle

    def kick(self) -> None:
        """Run an assignment round soon (coalesced: no lost wake-up, no pile-up)."""
        if not self._ctl.stopped:
            self._runner.kick(None)

    def kick_if_waiting(self) -> None:
        """Run an assignment round soon, unless it is known that no ticket waits (a kick for a
        change that can only serve a waiting ticket: a VM made ready, a ticket closed). On a
        store other controllers share, tickets may be inserted unseen: always a round."""
        if self._none_waiting and not self._ctl.shared_store:
            return
        self.kick()

    async def close(self) -> None:
        """Stop assigning."""
        self._closed = True
        await self._runner.close()

    def _retry_later(self, _keys: list[None]) -> None:
        self._ctl.later(self._ctl.tick, self.kick)

    async def _work(self, _keys: list[None]) -> None:
        await self.assign_once()

    async def _any_ready(self, limits: Mapping[str, allocation.PoolLimits]) -> bool:
        """True when some pool has a ready VM (a count per pool: a small bounded read)."""
        counts = await asyncio.gather(*(self._ctl.store.pools.count_vms(n) for n in limits))
        return any(c.get(state, 0) > 0 for c in counts for state in _TAKEABLE)

    async def assign_once(self) -> int:
        """Match waiting tickets with ready VMs once; returns how many were assigned."""
        ctl = self._ctl
        inserts, busy = self._inserts, self._inserting
        limits = {p.name: p for p in ctl.all_limits()}
        shared = {name: p.slots for name, p in limits.items() if p.slots > 1}
        if self._starved and not shared and not await self._any_ready(limits):
            # Still nothing to hand out: no need to read (let alone convert) every waiting
            # ticket, which a kick per created ticket made O(waiting^2) with 1,000 waiters
            # (issue 8 item 3). Supply is asked for; a VM becoming ready kicks this runner.
            for name in limits:
                ctl.kick_spawn(name)
            return 0
        inputs = await ctl.store.pools.allocation_inputs(
            {name: p.tags for name, p in limits.items()}, shared=shared or None
        )
        decided = decide(inputs, limits, ctl.clock())
        self._starved = decided.starved
        done = 0
        for choice in decided.plan:
            write = write_of(choice, decided, limits, ctl.clock())
            ok = await ctl.store.pools.assign_many(
                write.ticket,
                write.vms,
                now=write.now,
                slots=write.slots,
                max_per_owner=write.max_per_owner,
                owner_limits=write.owner_limits,
            )
            done += self._settle(choice, decided, write.now, ok)
        self._ask_supply(decided, limits)
        self._none_waiting = done == decided.queued and inserts == self._inserts and busy == 0
        return done

    async def insert(self, row: TicketRow, inserted: Callable[[TicketRow], None]) -> Ticket | None:
        """Store a new ticket and run an assignment round in the same store unit: one thread
        hop instead of three (the insert, the round's read, its write). The round reads, the
        pure :func:`decide` decides (the one decision rule, as in :meth:`assign_once`) and
        each decided write is made, all in one transaction. ``inserted(row)`` is called with
        the stored ticket before any assignment is announced. Returns the new ticket if it was
        assigned, else ``None`` (it waits; a refused write kicks a round, as in a round).

        Only while no ticket is known to wait (a warm pool: the unit reads the new ticket
        alone): with tickets waiting (for a VM, or beyond their owner's limit) it only inserts
        and kicks, as before, so that a burst of creates costs one coalesced round's read of
        the queue, not a read of the whole queue per created ticket (issue 8 item 3). Only on
        a store of this controller's own, too: on a shared one the unit's read comes before its
        commit, so a VM made ready by another host meanwhile would be seen by neither host's
        round (and another ticket's failed write would fail this create).

        The work runs to its end even if the caller is cancelled: the unit commits anyway (the
        store's executor finishes it), and what follows it (the ticket's event, the assignment's
        announcement, the kick) must not be skipped.
        """
        busy = self._inserting
        self._inserting += 1
        self._inserts += 1
        inserts = self._inserts
        quiet = self._none_waiting
        self._none_waiting = False  # before the insert: a kick meanwhile is not skipped

        async def run() -> Ticket | None:
            try:
                return await self._insert_and_assign(row, inserted, quiet, inserts, busy)
            finally:
                self._inserting -= 1  # before the round it kicked can start

        task = asyncio.ensure_future(run())
        self._inserts_running.add(task)
        task.add_done_callback(self._inserted)
        return await asyncio.shield(task)

    def _inserted(self, task: asyncio.Task[Ticket | None]) -> None:
        self._inserts_running.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.debug("assignment: a ticket's insert failed: %s", task.exception())

    async def _insert_and_assign(
        self,
        row: TicketRow,
        inserted: Callable[[TicketRow], None],
        quiet: bool,
        inserts: int,
        busy: int,
    ) -> Ticket | None:
        ctl = self._ctl
        if not quiet or self._starved or self._closed or ctl.stopped or ctl.shared_store:
            inserted(await ctl.store.pools.insert_ticket(row))
            self.kick()
            return None
        limits = {p.name: p for p in ctl.all_limits()}
        shared = {name: p.slots for name, p in limits.items() if p.slots > 1}
        now = ctl.clock()
        rounds: list[Decided] = []

        def writes(inputs: AllocationInputs) -> list[AssignWrite]:
            # runs in the store's transaction (a worker thread): pure, no loop, no I/O
            decided = decide(inputs, limits, now)
            rounds.append(decided)  # a unit retried alone decides again: the last one counts
            return [write_of(choice, decided, limits, now) for choice in decided.plan]

        result = await ctl.store.pools.insert_ticket_assigning(
            row, {name: p.tags for name, p in limits.items()}, shared=shared or None, decide=writes
        )
        inserted(result.row)
        decided = rounds[-1]
        self._starved = decided.starved
        mine: Ticket | None = None
        done = 0
        for choice, ok in zip(decided.plan, result.done, strict=True):
            if self._settle(choice, decided, now, ok):
                done += 1
                if choice.ticket == result.row.id:
                    mine = decided.waiting[choice.ticket].with_state(
                        TicketState.ASSIGNED, vm=choice.vm, vms=_names(choice), assigned_at=now
                    )
        self._ask_supply(decided, limits)
        self._none_waiting = done == decided.queued and inserts == self._inserts and busy == 0
        return mine

    def _settle(
        self, choice: allocation.Assignment, decided: Decided, now: float, ok: bool
    ) -> bool:
        """After one decided write: remember and announce it (True), or decide again."""
        if not ok:
            self.kick()  # someone else moved first: decide again
            return False
        self._remember(choice, decided.vms)
        self._announce(choice, decided.waiting[choice.ticket], decided.pools_of, now)
        return True

    def _ask_supply(self, decided: Decided, limits: Mapping[str, allocation.PoolLimits]) -> None:
        """Tickets left without a VM ask every pool for supply (after every round)."""
        if len(decided.plan) < decided.queued:
            for name in limits:
                self._ctl.kick_spawn(name)

    def _remember(self, choice: allocation.Assignment, by_name: Mapping[str, VM]) -> None:
        """Note the VMs of a written assignment for :meth:`handed_out`."""
        for name, _ in choice.vms:
            vm = by_name.get(name)
            if vm is not None:
                self._handed[name] = vm
                self._handed.move_to_end(name)
        while len(self._handed) > HANDED_LIMIT:
            self._handed.popitem(last=False)

    def _announce(
        self,
        choice: allocation.Assignment,
        ticket: Ticket,
        pools_of: Mapping[str, str],
        now: float,
    ) -> None:
        """Publish a successful assignment, wake its waiters and account it per pool."""
        ctl = self._ctl
        pool = pools_of[choice.vm]
        ctl.record(pool, "wait_time", now - ticket.created_at)
        # exactly the row the conditional write produced: waiters need not re-read it
        names = _names(choice)
        assigned = ticket.with_state(TicketState.ASSIGNED, vm=choice.vm, vms=names, assigned_at=now)
        data: dict[str, JSON] = {"vm": choice.vm, "pool": pool}
        if choice.others:
            data["vms"] = list(names)
        used = sorted({pools_of[name] for name in names})
        if ticket.requests:
            data["pools"] = list(used)
        ctl.ticket_changed(ticket.id, assigned.state.value, data, ticket=assigned)
        for name in names:
            ctl.events.publish(Event("vm", name, _VM_TAKEN, now, {"pool": pools_of[name]}))
        for used_pool in used:
            ctl.consumed(used_pool)


@dataclass(frozen=True, slots=True)
class Decided:
    """One round's decision and what it was made from (converted once)."""

    queued: int
    """How many waiting tickets the round read."""
    waiting: dict[str, Ticket]
    """The waiting tickets, by id (empty when there was no VM to give them: not converted)."""
    vms: dict[str, VM]
    """The candidate VMs read, by name."""
    pools_of: dict[str, str]
    """Each candidate VM's pool."""
    plan: list[allocation.Assignment]

    @property
    def starved(self) -> bool:
        """Tickets wait and no VM could be read for them."""
        return self.queued > 0 and not self.vms


def decide(
    inputs: AllocationInputs, limits: Mapping[str, allocation.PoolLimits], now: float
) -> Decided:
    """An assignment round's decision from what it read. Pure (no loop, no store, no clock),
    so that it may run inside a store transaction; without a VM to hand out, the waiting
    tickets are not even converted (a long queue costs one count per round, issue 8 item 3)."""
    if not inputs.waiting or not inputs.ready:
        return Decided(len(inputs.waiting), {}, {}, {}, [])
    tickets = [records.ticket(r) for r in inputs.waiting]
    vms = [records.vm(r) for r in inputs.ready]
    plan = allocation.allocate(tickets, vms, limits, inputs.held, now=now)
    return Decided(
        len(tickets),
        {t.id: t for t in tickets},
        {v.name: v for v in vms},
        {v.name: v.pool for v in vms},
        plan,
    )


def write_of(
    choice: allocation.Assignment,
    decided: Decided,
    limits: Mapping[str, allocation.PoolLimits],
    now: float,
) -> AssignWrite:
    """One decision as the store's conditional write (one transaction)."""
    pool = decided.pools_of[choice.vm]
    if decided.waiting[choice.ticket].requests:
        # a list ticket: VMs of several pools, in one transaction, all or nothing
        used = {decided.pools_of[name] for name, _ in choice.vms}
        return AssignWrite(
            choice.ticket,
            choice.vms,
            now,
            owner_limits={
                name: n for name in used if (n := limits[name].max_per_owner) is not None
            },
        )
    if choice.others or choice.load:
        # several VMs, or a shared one: each write conditional on the VM's ticket count
        return AssignWrite(
            choice.ticket,
            choice.vms,
            now,
            slots=limits[pool].slots,
            max_per_owner=limits[pool].max_per_owner,
        )
    return AssignWrite(choice.ticket, choice.vms, now, max_per_owner=limits[pool].max_per_owner)


def _names(choice: allocation.Assignment) -> tuple[str, ...]:
    return tuple(name for name, _ in choice.vms)
