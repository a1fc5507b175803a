"""A stand-in for the controller facade, used ONLY while corral.controller has not landed.

The fixtures in conftest.py use the real ``corral.controller.Controller`` (memory store, fake
backend) as soon as it is importable; this stand-in keeps the surfaces testable until then. It
implements the documented facade with plain dicts and asyncio events: one VM per ticket, assigned
when the test calls :meth:`StandInController.provide`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import replace

from corral import exceptions
from corral.config import CorralConfig
from corral.locks import LockManager
from corral.pools.model import VM, PoolStatus, Ticket, TicketState, VMState
from corral.tasks import JobContext, StepRegistry, TaskEngine
from corral.types import JSON

TEST_STEPS = StepRegistry()


@TEST_STEPS.job("test.noop")
async def _noop(ctx: JobContext, **args: JSON) -> JSON:
    await ctx.push_recovery("test.undo")
    return {"ok": True}


@TEST_STEPS.recovery("test.undo")
async def _undo(ctx: JobContext, **args: JSON) -> JSON:
    return None


class StandInController:
    """Tickets, VMs and pools in dicts; waits are events."""

    def __init__(self, config: CorralConfig) -> None:
        self.config = config
        self.tickets: dict[str, Ticket] = {}
        self.vms: dict[str, VM] = {}
        self._changed: dict[str, asyncio.Event] = {}
        self._ids = itertools.count(1)
        self.locks = LockManager()
        self.tasks = TaskEngine(None, self.locks, TEST_STEPS)

    @classmethod
    async def create(cls, config: CorralConfig) -> StandInController:
        return cls(config)

    async def start(self) -> None:
        await self.tasks.start()
        for name in self.config.pools:
            for _ in range(self.config.pools[name].min_ready):
                self._spawn(name)

    async def stop(self) -> None:
        await self.tasks.close()

    def _spawn(self, pool: str) -> VM:
        now = time.time()
        name = f"{pool}-{next(self._ids):04d}"
        vm = VM(name=name, pool=pool, state=VMState.READY, created_at=now, state_since=now)
        vm = replace(vm, address="127.0.0.1", ready_at=now)
        self.vms[name] = vm
        return vm

    def _assign(self) -> None:
        for ticket in sorted(self.tickets.values(), key=lambda t: (-t.priority, t.seq)):
            if ticket.state != TicketState.WAITING:
                continue
            ready = [v for v in self.vms.values() if v.pool == ticket.pool and v.ready_at]
            free = [v for v in ready if v.state == VMState.READY]
            alive = [v for v in ready if v.state != VMState.TERMINATING]
            if not free and ticket.pool is not None:
                if len(alive) >= self.config.pools[ticket.pool].max:
                    continue
                free = [self._spawn(ticket.pool)]
            vm = free[0]
            self.vms[vm.name] = replace(vm, state=VMState.IN_USE, ticket=ticket.id)
            self.tickets[ticket.id] = replace(
                ticket, state=TicketState.ASSIGNED, vm=vm.name, assigned_at=time.time()
            )
            self._changed[ticket.id].set()

    def _pool_for(self, pool: str | None, tags: Sequence[str]) -> str:
        for name, cfg in self.config.pools.items():
            if (pool is None or pool == name) and set(tags) <= set(cfg.tags):
                return name
        if pool is not None and pool not in self.config.pools:
            raise exceptions.PoolNotFound(f"no pool named {pool!r}")
        raise exceptions.NoMatchingPool(f"no pool matches pool={pool} tags={list(tags)}")

    async def create_ticket(
        self,
        *,
        owner: str,
        pool: str | None = None,
        tags: Sequence[str] = (),
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
    ) -> Ticket:
        name = self._pool_for(pool, tags)
        seq = next(self._ids)
        now = time.time()
        ticket = Ticket(
            id=f"t{seq}",
            owner=owner,
            state=TicketState.WAITING,
            created_at=now,
            expires_at=None if ttl is None else now + ttl,
            pool=name,
            tags=tuple(tags),
            sandbox=sandbox,
            priority=priority,
            ttl=ttl,
            seq=seq,
        )
        self.tickets[ticket.id] = ticket
        self._changed[ticket.id] = asyncio.Event()
        self._assign()
        return self.tickets[ticket.id]

    def provide(self, pool: str) -> VM:
        """Make one more VM ready in ``pool`` and assign waiting tickets."""
        vm = self._spawn(pool)
        self._assign()
        return vm

    async def get_ticket(self, ticket_id: str, /) -> Ticket:
        try:
            return self.tickets[ticket_id]
        except KeyError:
            raise exceptions.TicketNotFound(f"no ticket with id {ticket_id!r}") from None

    async def wait_ticket(self, ticket_id: str, /, timeout: float | None) -> Ticket:
        ticket = await self.get_ticket(ticket_id)
        if ticket.state != TicketState.WAITING:
            return ticket
        try:
            await asyncio.wait_for(self._changed[ticket_id].wait(), timeout)
        except TimeoutError:
            raise exceptions.TicketTimeout(ticket_id) from None
        return await self.get_ticket(ticket_id)

    async def renew_ticket(self, ticket_id: str, /) -> Ticket:
        ticket = await self.get_ticket(ticket_id)
        if not ticket.open:
            raise exceptions.TicketClosed(f"ticket {ticket_id} is {ticket.state}")
        ttl = ticket.ttl
        self.tickets[ticket_id] = replace(
            ticket, expires_at=None if ttl is None else time.time() + ttl
        )
        return self.tickets[ticket_id]

    async def close_ticket(self, ticket_id: str, /) -> Ticket:
        ticket = await self.get_ticket(ticket_id)
        if not ticket.open:
            return ticket
        target = (
            TicketState.CANCELLED if ticket.state == TicketState.WAITING else TicketState.CLOSED
        )
        self.tickets[ticket_id] = ticket.with_state(target, closed_at=time.time())
        if ticket.vm is not None:
            vm = self.vms[ticket.vm]
            self.vms[vm.name] = replace(vm, state=VMState.READY, ticket=None, uses=vm.uses + 1)
        self._changed[ticket_id].set()
        self._assign()
        return self.tickets[ticket_id]

    async def list_tickets(
        self, *, owner: str | None = None, state: str | None = None
    ) -> list[Ticket]:
        return [
            t
            for t in self.tickets.values()
            if (owner is None or t.owner == owner) and (state is None or t.state == state)
        ]

    async def list_pools(self) -> list[PoolStatus]:
        return [await self.get_pool(name) for name in self.config.pools]

    async def get_pool(self, name: str, /) -> PoolStatus:
        cfg = self.config.pool(name)
        counts: dict[str, int] = {}
        for vm in self.vms.values():
            if vm.pool == name:
                counts[vm.state.value] = counts.get(vm.state.value, 0) + 1
        tickets = [t for t in self.tickets.values() if t.pool == name]
        return PoolStatus(
            name=name,
            backend=cfg.backend.type,
            tags=tuple(cfg.tags),
            max=cfg.max,
            max_starting=cfg.max_starting,
            min_ready=cfg.min_ready,
            vms=counts,
            waiting_tickets=sum(t.state == TicketState.WAITING for t in tickets),
            assigned_tickets=sum(t.state == TicketState.ASSIGNED for t in tickets),
        )

    async def list_vms(self, *, pool: str | None = None, state: str | None = None) -> list[VM]:
        return [
            v
            for v in self.vms.values()
            if (pool is None or v.pool == pool) and (state is None or v.state == state)
        ]

    async def get_vm(self, name: str, /) -> VM:
        try:
            return self.vms[name]
        except KeyError:
            raise exceptions.VMNotFound(f"no VM named {name!r}") from None

    async def terminate_vm(self, name: str, /) -> VM:
        vm = await self.get_vm(name)
        self.vms[name] = vm.with_state(VMState.TERMINATING, time.time())
        return self.vms[name]
