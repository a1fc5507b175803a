"""Assignment: match waiting tickets with ready VMs, event-driven, one atomic write per ticket.

Kicked by a ticket created, a VM ready, a ticket closed; one coalesced runner reads the inputs in
one store transaction (a bounded read), lets :func:`corral.pools.allocation.allocate` decide and
performs each decision as the store's conditional assignment. A write that loses a race (another
process was faster) just makes the runner decide again. This module must not decide itself.
"""

from __future__ import annotations

from corral.controller import ports, records
from corral.controller.events import Event
from corral.controller.runner import Coalescer
from corral.pools import allocation
from corral.pools.lifecycle import VMEvent, vm_target
from corral.pools.model import TicketState

_VM_TAKEN = str(vm_target(VMEvent.ASSIGNED))
"""The state the store's assignment moves a VM to."""


class Assigner:
    """Assigns tickets; one coalesced runner."""

    def __init__(self, controller: ports.AssignerHost) -> None:
        self._ctl = controller
        self._runner: Coalescer[None] = Coalescer(
            "assignment", self._work, on_error=self._retry_later
        )

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

    async def assign_once(self) -> int:
        """Match waiting tickets with ready VMs once; returns how many were assigned."""
        ctl = self._ctl
        limits = {p.name: p for p in ctl.all_limits()}
        inputs = await ctl.store.pools.allocation_inputs(
            {name: p.tags for name, p in limits.items()}
        )
        if not inputs.waiting:
            return 0
        if not inputs.ready:
            # nothing to hand out: skip building every waiting ticket (O(waiting) per kick, the
            # main cost of 1,000 waiters on a full pool); the waiters still ask for supply
            for name in limits:
                ctl.kick_spawn(name)
            return 0
        waiting = [records.ticket(r) for r in inputs.waiting]
        vms = [records.vm(r) for r in inputs.ready]
        plan = allocation.allocate(waiting, vms, limits, inputs.held)
        by_id = {t.id: t for t in waiting}
        pools_of = {v.name: v.pool for v in vms}
        done = 0
        for choice in plan:
            pool = pools_of[choice.vm]
            now = ctl.clock()
            ok = await ctl.store.pools.assign(
                choice.ticket, choice.vm, now=now, max_per_owner=limits[pool].max_per_owner
            )
            if not ok:
                self.kick()  # someone else moved first: decide again
                continue
            done += 1
            ticket = by_id[choice.ticket]
            ctl.record(pool, "wait_time", now - ticket.created_at)
            # exactly the row the conditional write produced: waiters need not re-read it
            assigned = ticket.with_state(TicketState.ASSIGNED, vm=choice.vm, assigned_at=now)
            ctl.ticket_changed(
                ticket.id, assigned.state.value, {"vm": choice.vm, "pool": pool}, ticket=assigned
            )
            ctl.events.publish(Event("vm", choice.vm, _VM_TAKEN, now, {"pool": pool}))
            ctl.consumed(pool)
        if len(plan) < len(waiting):
            for name in limits:
                ctl.kick_spawn(name)
        return done
