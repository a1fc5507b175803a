"""Assignment: match waiting tickets with ready VMs, event-driven, one atomic write per ticket.

Kicked by a ticket created, a VM ready, a ticket closed; one coalesced runner reads the inputs in
one store transaction (a bounded read), lets :func:`corral.pools.allocation.allocate` decide and
performs each decision as the store's conditional assignment. A write that loses a race (another
process was faster) just makes the runner decide again. This module must not decide itself.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping

from corral.controller import ports, records
from corral.controller.events import Event
from corral.controller.runner import Coalescer
from corral.pools import allocation
from corral.pools.lifecycle import VM_RULES, VMEvent, vm_target
from corral.pools.model import VM, Ticket, TicketState
from corral.types import JSON

_VM_TAKEN = str(vm_target(VMEvent.ASSIGNED))
"""The state the store's assignment moves a VM to."""
_TAKEABLE = tuple(str(state) for state in VM_RULES[VMEvent.ASSIGNED].sources)
"""The states of a VM an assignment can take (in a pool of single-ticket VMs), from the table."""

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

    async def close(self) -> None:
        """Stop assigning."""
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
        self._starved = bool(inputs.waiting) and not inputs.ready
        if not inputs.waiting:
            return 0
        if not inputs.ready:
            # nothing to hand out: skip building every waiting ticket; the waiters still ask
            # for supply, and the next rounds count ready VMs before reading the queue again
            for name in limits:
                ctl.kick_spawn(name)
            return 0
        waiting = [records.ticket(r) for r in inputs.waiting]
        vms = [records.vm(r) for r in inputs.ready]
        plan = allocation.allocate(waiting, vms, limits, inputs.held, now=ctl.clock())
        by_id = {t.id: t for t in waiting}
        pools_of = {v.name: v.pool for v in vms}
        by_name = {v.name: v for v in vms}
        done = 0
        for choice in plan:
            now = ctl.clock()
            ok = await self._write(choice, by_id[choice.ticket], pools_of, limits, now)
            if not ok:
                self.kick()  # someone else moved first: decide again
                continue
            done += 1
            self._remember(choice, by_name)
            self._announce(choice, by_id[choice.ticket], pools_of, now)
        if len(plan) < len(waiting):
            for name in limits:
                ctl.kick_spawn(name)
        return done

    async def _write(
        self,
        choice: allocation.Assignment,
        ticket: Ticket,
        pools_of: Mapping[str, str],
        limits: Mapping[str, allocation.PoolLimits],
        now: float,
    ) -> bool:
        """Perform one decision as the store's conditional write (one transaction)."""
        ctl = self._ctl
        pool = pools_of[choice.vm]
        if ticket.requests:
            # a list ticket: VMs of several pools, in one transaction, all or nothing
            used = {pools_of[name] for name, _ in choice.vms}
            return await ctl.store.pools.assign_many(
                choice.ticket,
                choice.vms,
                now=now,
                owner_limits={
                    name: n for name in used if (n := limits[name].max_per_owner) is not None
                },
            )
        if choice.others or choice.load:
            # several VMs, or a shared one: each write conditional on the VM's ticket count
            return await ctl.store.pools.assign_many(
                choice.ticket,
                choice.vms,
                now=now,
                slots=limits[pool].slots,
                max_per_owner=limits[pool].max_per_owner,
            )
        return await ctl.store.pools.assign(
            choice.ticket, choice.vm, now=now, max_per_owner=limits[pool].max_per_owner
        )

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
        names = tuple(name for name, _ in choice.vms)
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
