"""Tickets (SPEC §5): create, wait (event-driven), renew, close — the controller's ticket facade.

A waiter registers its future before it reads the ticket, so an assignment between the read and
the wait cannot be missed; a local assignment hands the waiter the new ticket directly. A ticket
created by this process and not changed since is known to be ``waiting`` without a read (create
and wait in one request costs no extra round trip). Closing frees the VM in the same store
transaction. This module must not decide allocation or reuse
(:mod:`corral.pools.allocation` does) nor call backends.
"""

from __future__ import annotations

import asyncio
import builtins
from collections import OrderedDict
from collections.abc import Mapping, Sequence

from corral import exceptions
from corral.controller import ports, records, wiring
from corral.controller.events import Event
from corral.controller.operators import PoolMode
from corral.ids import IdGenerator
from corral.pools import allocation
from corral.pools.lifecycle import (
    TICKET_INITIAL,
    VM_FREE_EVENTS,
    VM_RULES,
    Effect,
    TicketEvent,
    VMState,
    ticket_end_event,
    ticket_move,
)
from corral.pools.model import Ticket, TicketState
from corral.store.pools import TicketRow
from corral.types import JSON

FRESH_LIMIT = 4096
"""Tickets remembered as created here and unchanged since (the oldest are forgotten first)."""


class Tickets:
    """The ticket operations of one controller and the waiters of its tickets."""

    def __init__(self, controller: ports.TicketsHost) -> None:
        self._ctl = controller
        self._waiters: dict[str, builtins.list[asyncio.Future[Ticket | None]]] = {}
        # Created by this process and not changed since as far as it knows: still ``waiting``.
        # Another process sharing the store may assign one meanwhile; a waiter on a shared
        # store re-reads it every tick anyway, as it does after its first read.
        self._fresh: OrderedDict[str, None] = OrderedDict()
        self._ids = IdGenerator()

    def cancel_waiters(self) -> None:
        """Wake every waiter with a cancellation (the controller stops)."""
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()

    def changed(
        self,
        ticket_id: str,
        state: str,
        data: Mapping[str, JSON],
        *,
        ticket: Ticket | None = None,
    ) -> None:
        """Publish a ticket's change and wake its waiters (with the new ticket when known)."""
        self._fresh.pop(ticket_id, None)
        self._ctl.events.publish(Event("ticket", ticket_id, state, self._ctl.clock(), dict(data)))
        for future in self._waiters.pop(ticket_id, []):
            if not future.done():
                future.set_result(ticket)

    async def create(
        self,
        *,
        owner: str,
        pool: str | None = None,
        tags: Sequence[str] = (),
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> Ticket:
        """Queue a request for one VM of ``pool`` or of any pool whose tags include ``tags``."""
        wiring.check_ticket_input(owner, pool, tags, sandbox, priority, ttl)
        pairs = () if meta is None else tuple(sorted(wiring.check_meta(meta).items()))
        if pool is not None:
            self._ctl.config.pool(pool)
        probe = Ticket(
            id="",
            owner=owner,
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
            pool=pool,
            tags=tuple(tags),
        )
        matching = allocation.pools_for(probe, self._ctl.all_limits())
        if not matching:
            raise exceptions.NoMatchingPool(
                f"no pool has the tags {sorted(set(tags))}"
                + (f" (pool {pool!r})" if pool is not None else "")
            )
        lease = float(ttl) if ttl is not None else self._ctl.config.pool(matching[0]).ticket_ttl
        now = self._ctl.clock()
        row = await self._ctl.store.pools.insert_ticket(
            TicketRow(
                id=self._ids.hex(),
                owner=owner,
                state=TICKET_INITIAL.value,
                created_at=now,
                expires_at=None if lease is None else now + lease,
                pool=pool,
                tags=tuple(sorted(set(tags))),
                sandbox=sandbox,
                priority=priority,
                ttl=lease,
                meta=pairs,
            )
        )
        self._ctl.events.publish(Event("ticket", row.id, row.state, now, {"owner": owner}))
        self._fresh[row.id] = None
        if len(self._fresh) > FRESH_LIMIT:
            self._fresh.popitem(last=False)
        self._ctl.kick_assign()
        return records.ticket(row)

    async def get(self, ticket_id: str, /) -> Ticket:
        """One ticket (``TicketNotFound`` otherwise)."""
        row = (
            await self._ctl.store.pools.get_ticket(ticket_id)
            if isinstance(ticket_id, str)
            else None
        )
        if row is None:
            raise exceptions.TicketNotFound(f"no ticket {ticket_id!r}")
        return records.ticket(row)

    async def wait(self, ticket_id: str, /, timeout: float | None = None) -> Ticket:
        """Wait until the ticket leaves ``waiting``; ``TicketTimeout`` after ``timeout`` s.

        Event-driven: the waiter is registered before the ticket is read, so an assignment
        between the read and the wait cannot be missed, and it is woken by the change itself,
        never by a timer. A ticket created here and unchanged since is not read first: it is
        known to be waiting. Only a store other processes may share (PostgreSQL) is re-read,
        every ``tick`` at most, because another process may assign the ticket.
        """
        if timeout is not None and (
            not isinstance(timeout, int | float) or not timeout >= 0 or timeout == float("inf")
        ):
            raise exceptions.InvalidInput("timeout must be a finite number of seconds >= 0")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        known_waiting = ticket_id in self._fresh
        self._fresh.pop(ticket_id, None)
        shared = self._ctl.shared_store
        while True:
            future: asyncio.Future[Ticket | None] = loop.create_future()
            self._waiters.setdefault(ticket_id, []).append(future)
            try:
                if known_waiting:
                    known_waiting = False
                else:
                    ticket = await self.get(ticket_id)
                    if ticket.state is not TicketState.WAITING:
                        return ticket
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    raise exceptions.TicketTimeout(
                        f"ticket {ticket_id} is still waiting after {timeout:g} s"
                    )
                step = left
                if shared:
                    step = self._ctl.tick if left is None else min(left, self._ctl.tick)
                try:
                    async with asyncio.timeout(step):
                        woken = await future
                except TimeoutError:
                    if shared and (deadline is None or loop.time() < deadline):
                        continue  # re-read: another process may have assigned it
                    raise exceptions.TicketTimeout(
                        f"ticket {ticket_id} is still waiting after {timeout:g} s"
                    ) from None
                if woken is not None:
                    return woken
            finally:
                waiters = self._waiters.get(ticket_id)
                if waiters is not None and future in waiters:
                    waiters.remove(future)
                    if not waiters:
                        del self._waiters[ticket_id]

    async def renew(self, ticket_id: str, /, *, known: Ticket | None = None) -> Ticket:
        """Extend an open ticket's lease by its ``ttl`` from now.

        ``known`` is the ticket as the caller just read it: its ``ttl`` never changes, so the
        renewal is then one conditional write, with no read first.
        """
        ticket = known if known is not None and known.id == ticket_id else await self.get(ticket_id)
        if not ticket.open:
            raise exceptions.TicketClosed(f"ticket {ticket_id} is {ticket.state}")
        if ticket.ttl is None:
            return ticket
        move = ticket_move(TicketEvent.RENEWED)
        row = await self._ctl.store.pools.update_ticket(
            ticket_id, expect=move.expect, changes={"expires_at": self._ctl.clock() + ticket.ttl}
        )
        if row is None:
            raise exceptions.TicketClosed(f"ticket {ticket_id} was closed meanwhile")
        return records.ticket(row)

    async def close(self, ticket_id: str, /) -> Ticket:
        """Close an assigned ticket (its VM is reused or terminated) or cancel a waiting one.

        Closing a ticket that is already over returns it unchanged.
        """
        if isinstance(ticket_id, str) and not any(p.reuse_sandbox for p in self._ctl.all_limits()):
            # No pool reuses VMs, so an assigned ticket's VM is always terminated: try that in
            # one conditional write before reading the ticket (the common case costs one unit).
            closed = await self._finish(
                ticket_id, TicketState.ASSIGNED, TicketState.CLOSED, VMState.TERMINATING, None
            )
            if closed is not None:
                return closed
        for _ in range(5):
            ticket = await self.get(ticket_id)
            if ticket.state is TicketState.WAITING:
                closed = await self.end(ticket, TicketState.CANCELLED, "cancelled by its owner")
            elif ticket.state is TicketState.ASSIGNED:
                closed = await self.end(ticket, TicketState.CLOSED, None)
            else:
                return ticket
            if closed is not None:
                return closed
        raise exceptions.Conflict(f"ticket {ticket_id} keeps changing; try again")

    async def end(
        self, ticket: Ticket, state: TicketState, reason: str | None, *, reuse: bool = True
    ) -> Ticket | None:
        """Move an open ticket to ``state`` and free its VM (reused if allowed, else terminated).

        ``None`` when the ticket changed state meanwhile (nothing was done).
        """
        ticket_move(ticket_end_event(state), ticket.state)  # raises on a move the table lacks
        now = self._ctl.clock()
        vm_state: VMState | None = None
        if ticket.state is TicketState.ASSIGNED and ticket.vm is not None:
            keep = False
            if reuse and state is TicketState.CLOSED and ticket.sandbox is not None:
                row = await self._ctl.store.pools.get_vm(ticket.vm)
                keep = (
                    row is not None
                    and self._ctl.pool_mode(row.pool) is PoolMode.ACTIVE
                    and allocation.may_reuse(
                        self._ctl.limits(row.pool), records.vm(row), ticket.sandbox, now
                    )
                )
            vm_state = VMState.RELEASING if keep else VMState.TERMINATING
        return await self._finish(ticket.id, ticket.state, state, vm_state, reason, now=now)

    async def _finish(
        self,
        ticket_id: str,
        current: TicketState,
        state: TicketState,
        vm_state: VMState | None,
        reason: str | None,
        *,
        now: float | None = None,
    ) -> Ticket | None:
        move = ticket_move(ticket_end_event(state), current)
        vm_event = None if vm_state is None else VM_FREE_EVENTS[vm_state]
        closed = await self._ctl.store.pools.close_ticket(
            ticket_id,
            expect=move.expect,
            state=state.value,
            vm_state=None if vm_state is None else vm_state.value,
            now=self._ctl.clock() if now is None else now,
            reason=reason,
        )
        if closed is None:
            return None
        if Effect.WAKE_WAITERS in move.effects:
            self._ctl.ticket_changed(ticket_id, state.value, {"vm": closed.ticket.vm})
        if closed.vm is not None and vm_event is not None:
            await self._ctl.vm_moved(closed.vm, VM_RULES[vm_event].effects)
        if Effect.KICK_ASSIGN in move.effects:
            self._ctl.kick_assign()
        return records.ticket(closed.ticket)

    async def list(
        self,
        *,
        owner: str | None = None,
        state: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> builtins.list[Ticket]:
        """Tickets by priority then age, optionally of one owner, in one state, with every
        ``meta`` pair."""
        if meta is not None:
            meta = wiring.check_meta(meta, filter_=True)
        if state is not None:
            try:
                TicketState(state)
            except ValueError:
                raise exceptions.InvalidInput(
                    f"unknown ticket state {state!r} (known: {', '.join(TicketState)})"
                ) from None
        rows = await self._ctl.store.pools.list_tickets(
            owner=owner, states=None if state is None else [state], meta=meta or None
        )
        return [records.ticket(r) for r in rows]
