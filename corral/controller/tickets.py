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
from corral.pools.model import Request, Ticket, TicketState
from corral.store.pools import LeaseFence, TicketRow
from corral.types import JSON

MAX_REQUESTS = 16
"""The most entries one list ticket may have."""

FRESH_LIMIT = 4096
"""Tickets remembered as created here and unchanged since (the oldest are forgotten first)."""


class Tickets:
    """The ticket operations of one controller and the waiters of its tickets."""

    def __init__(self, controller: ports.TicketsHost) -> None:
        self._ctl = controller
        self._waiters: dict[str, builtins.list[asyncio.Future[Ticket | None]]] = {}
        # Created by this process and not changed since as far as it knows: still ``waiting``,
        # as it is here (every change of a ticket goes through :meth:`changed`, which drops it;
        # a renewal replaces it). Another process sharing the store may assign one meanwhile; a
        # waiter on a shared store re-reads it every tick anyway, as it does after its first
        # read, and :meth:`get` reads a shared store.
        self._fresh: OrderedDict[str, Ticket] = OrderedDict()
        self._ids = IdGenerator()

    def cancel_waiters(self) -> None:
        """Wake every waiter with a cancellation (the controller stops)."""
        for futures in self._waiters.values():
            for future in futures:
                if not future.done():
                    future.cancel()

    def changed_elsewhere(self, ticket_id: str | None = None) -> None:
        """Another host changed ``ticket_id`` (``None``: maybe any ticket, after a lost
        connection): its waiters re-read it, and it is no longer known to be waiting."""
        if ticket_id is None:
            self._fresh.clear()
            ids = list(self._waiters)
        else:
            self._fresh.pop(ticket_id, None)
            ids = [ticket_id]
        for tid in ids:
            for future in self._waiters.pop(tid, []):
                if not future.done():
                    future.set_result(None)  # None: re-read the ticket

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
        exclusive: bool = False,
        count: int = 1,
        requests: Sequence[Request] | None = None,
    ) -> Ticket:
        """Queue a request for one VM of ``pool`` or of any pool whose tags include ``tags``
        (``count`` VMs of one pool, assigned together; ``exclusive``: whole VMs, shared with
        no other ticket). ``requests``: a list ticket instead, one VM set per entry (each by
        pool or by tags, with its count), all assigned together or none."""
        if requests is not None:
            if pool is not None or tags or count != 1:
                raise exceptions.InvalidInput(
                    "requests cannot be combined with pool, tags or count: give each entry "
                    "its own pool or tags and count"
                )
            return await self._create_list(
                owner=owner,
                requests=requests,
                sandbox=sandbox,
                priority=priority,
                ttl=ttl,
                meta=meta,
                exclusive=exclusive,
            )
        wiring.check_ticket_input(owner, pool, tags, sandbox, priority, ttl)
        if not isinstance(exclusive, bool):
            raise exceptions.InvalidInput("exclusive must be true or false")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise exceptions.InvalidInput(f"count must be a whole number >= 1, not {count!r}")
        pairs = () if meta is None else tuple(sorted(wiring.check_meta(meta).items()))
        removed = self._ctl.removed_pools()
        if pool is not None:
            self._ctl.config.pool(pool)
            if pool in removed:
                raise exceptions.PoolRemoved(
                    f"pool {pool!r} was removed from the configuration and is draining: it "
                    "takes no new tickets (its open ones finish)"
                )
        probe = Ticket(
            id="",
            owner=owner,
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
            pool=pool,
            tags=tuple(tags),
        )
        limits = [p for p in self._ctl.all_limits() if p.name not in removed]
        matching = allocation.pools_for(probe, limits)
        if not matching:
            raise exceptions.NoMatchingPool(
                f"no pool has the tags {sorted(set(tags))}"
                + (f" (pool {pool!r})" if pool is not None else "")
            )
        if count > 1:
            _check_count(count, [self._ctl.limits(name) for name in matching])
        lease = float(ttl) if ttl is not None else self._ctl.config.pool(matching[0]).ticket_ttl
        return await self._insert(
            self._row(
                owner,
                lease,
                pool=pool,
                tags=tuple(sorted(set(tags))),
                sandbox=sandbox,
                priority=priority,
                meta=pairs,
                exclusive=exclusive,
                count=count,
            )
        )

    async def _create_list(
        self,
        *,
        owner: str,
        requests: Sequence[Request],
        sandbox: str | None,
        priority: int,
        ttl: float | None,
        meta: Mapping[str, str] | None,
        exclusive: bool,
    ) -> Ticket:
        """Queue a list ticket (see :meth:`create`), checked whole before anything is written."""
        wiring.check_ticket_input(owner, None, (), sandbox, priority, ttl)
        if not isinstance(exclusive, bool):
            raise exceptions.InvalidInput("exclusive must be true or false")
        pairs = () if meta is None else tuple(sorted(wiring.check_meta(meta).items()))
        parts = _check_requests(requests)
        removed = self._ctl.removed_pools()
        limits = [p for p in self._ctl.all_limits() if p.name not in removed]
        options: list[list[str]] = []
        for i, part in enumerate(parts):
            if part.pool is not None:
                self._ctl.config.pool(part.pool)
                if part.pool in removed:
                    raise exceptions.PoolRemoved(
                        f"requests[{i}]: pool {part.pool!r} was removed from the configuration "
                        "and is draining: it takes no new tickets"
                    )
            names = allocation.request_pools(part, limits)
            if not names:
                raise exceptions.NoMatchingPool(
                    f"requests[{i}]: no pool has the tags {sorted(set(part.tags))}"
                )
            options.append(names)
        room = {
            p.name: p.max if p.max_per_owner is None else min(p.max, p.max_per_owner)
            for p in limits
        }
        if allocation.fit_requests(parts, options, room) is None:
            asked = "; ".join(
                f"requests[{i}]: {r.count} of {', '.join(names)}"
                for i, (r, names) in enumerate(zip(parts, options, strict=True))
            )
            raise exceptions.InvalidInput(
                "requests ask for more than the pools can give one ticket together (each "
                f"pool's max, or max_per_owner): {asked}"
            )
        first = self._ctl.config.pool(options[0][0])
        lease = float(ttl) if ttl is not None else first.ticket_ttl
        return await self._insert(
            self._row(
                owner,
                lease,
                pool=None,
                tags=(),
                sandbox=sandbox,
                priority=priority,
                meta=pairs,
                exclusive=exclusive,
                count=sum(r.count for r in parts),
                requests=tuple((r.pool, r.tags, r.count) for r in parts),
            )
        )

    def _row(
        self,
        owner: str,
        lease: float | None,
        *,
        pool: str | None,
        tags: tuple[str, ...],
        sandbox: str | None,
        priority: int,
        meta: tuple[tuple[str, str], ...],
        exclusive: bool,
        count: int,
        requests: tuple[tuple[str | None, tuple[str, ...], int], ...] = (),
    ) -> TicketRow:
        """A new waiting ticket's row, created now, its lease running from now."""
        now = self._ctl.clock()
        return TicketRow(
            id=self._ids.hex(),
            owner=owner,
            state=TICKET_INITIAL.value,
            created_at=now,
            expires_at=None if lease is None else now + lease,
            pool=pool,
            tags=tags,
            sandbox=sandbox,
            priority=priority,
            ttl=lease,
            meta=meta,
            exclusive=exclusive,
            count=count,
            requests=requests,
        )

    async def _insert(self, new: TicketRow) -> Ticket:
        """Store a new ticket, announce it and ask for an assignment round."""
        stored: list[Ticket] = []

        def inserted(row: TicketRow) -> None:
            self._ctl.events.publish(
                Event("ticket", row.id, row.state, new.created_at, {"owner": new.owner})
            )
            ticket = records.ticket(row)
            stored.append(ticket)
            self._fresh[row.id] = ticket
            if len(self._fresh) > FRESH_LIMIT:
                self._fresh.popitem(last=False)

        # the insert and an assignment round in one store unit (a warm pool: assigned at once)
        assigned = await self._ctl.insert_ticket(new, inserted)
        return stored[-1] if assigned is None else assigned

    async def get(self, ticket_id: str, /) -> Ticket:
        """One ticket (``TicketNotFound`` otherwise).

        A ticket created here and unchanged since is answered from memory on a store of this
        process's own: the long-poll that follows a create costs no read (issue 8 item 3).
        """
        if isinstance(ticket_id, str) and not self._ctl.shared_store:
            known = self._fresh.get(ticket_id)
            if known is not None:
                return known
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
        renewed = records.ticket(row)
        if ticket_id in self._fresh:  # not dropped meanwhile by a change
            if renewed.state is TicketState.WAITING:
                self._fresh[ticket_id] = renewed
            else:  # changed by a write whose ``changed`` is still to come
                del self._fresh[ticket_id]
        return renewed

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
        self,
        ticket: Ticket,
        state: TicketState,
        reason: str | None,
        *,
        reuse: bool = True,
        fence: LeaseFence | None = None,
    ) -> Ticket | None:
        """Move an open ticket to ``state`` and free its VM (reused if allowed, else terminated).

        ``None`` when the ticket changed state meanwhile (nothing was done). ``fence``: a pool
        leader's write (the store refuses it with ``StaleEpoch`` once the lease moved).
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
        return await self._finish(
            ticket.id, ticket.state, state, vm_state, reason, now=now, fence=fence
        )

    async def _finish(
        self,
        ticket_id: str,
        current: TicketState,
        state: TicketState,
        vm_state: VMState | None,
        reason: str | None,
        *,
        now: float | None = None,
        fence: LeaseFence | None = None,
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
            fence=fence,
        )
        if closed is None:
            return None
        if Effect.WAKE_WAITERS in move.effects:
            # the pool too: 'corral events --pool P' keeps a ticket's events by their pool
            data: dict[str, JSON] = {"vm": closed.ticket.vm}
            if closed.ticket.pool is not None:
                data["pool"] = closed.ticket.pool
            self._ctl.ticket_changed(ticket_id, state.value, data)
        if vm_event is not None:
            # every VM the ticket was the last to hold (a shared VM others hold stays theirs)
            for freed in (closed.vm, *closed.others):
                if freed is not None:
                    await self._ctl.vm_moved(freed, VM_RULES[vm_event].effects)
        if Effect.KICK_ASSIGN in move.effects:
            # a closed ticket frees what only a waiting ticket can take
            self._ctl.kick_assign_if_waiting()
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


def _check_requests(requests: object) -> tuple[Request, ...]:
    """A list ticket's entries, checked (``InvalidInput`` naming the bad entry): 1 to
    :data:`MAX_REQUESTS` of them, each with a pool or tags (not both) and a count >= 1; its
    tags sorted and deduplicated."""
    if isinstance(requests, str | bytes) or not isinstance(requests, Sequence):
        raise exceptions.InvalidInput("requests must be a list of pool or tag entries")
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise exceptions.InvalidInput(
            f"requests must hold 1 to {MAX_REQUESTS} entries, not {len(requests)}"
        )
    parts: list[Request] = []
    for i, entry in enumerate(requests):
        if not isinstance(entry, Request):
            raise exceptions.InvalidInput(f"requests[{i}] must be a pool or tag entry")
        try:
            wiring.check_ticket_input("-", entry.pool, entry.tags, None, 0, None)
        except exceptions.InvalidInput as exc:
            raise exceptions.InvalidInput(f"requests[{i}]: {exc}") from None
        if (entry.pool is None) == (not entry.tags):
            raise exceptions.InvalidInput(
                f"requests[{i}] must name a pool or give tags (one of the two, not both)"
            )
        count = entry.count
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise exceptions.InvalidInput(
                f"requests[{i}]: count must be a whole number >= 1, not {count!r}"
            )
        parts.append(Request(entry.pool, tuple(sorted(set(entry.tags))), count))
    return tuple(parts)


def _check_count(count: int, pools: Sequence[allocation.PoolLimits]) -> None:
    """A multi-machine ticket must fit at least one of the pools that match it (else it would
    wait for ever): ``count`` within its ``max`` and its ``max_per_owner``."""
    fits = [
        p for p in pools if count <= p.max and (p.max_per_owner is None or count <= p.max_per_owner)
    ]
    if not fits:
        limits = ", ".join(
            f"{p.name}: max {p.max}"
            + ("" if p.max_per_owner is None else f", max_per_owner {p.max_per_owner}")
            for p in pools
        )
        raise exceptions.InvalidInput(
            f"count {count} is more than any matching pool can give one ticket ({limits})"
        )
