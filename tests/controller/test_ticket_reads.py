"""Ticket operations cost no needless store round trips: a ticket created here is waited for
without a read, and ticket ids come from batched randomness."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from corral import exceptions
from corral.ids import BATCH, IdGenerator
from corral.pools.model import TicketState
from corral.store.pools import TicketRow

from .conftest import controller


async def test_waiting_on_a_ticket_created_here_reads_nothing_first() -> None:
    async with controller({"min_ready": 0, "max": 0}) as ctl:
        reads: list[str] = []
        get_ticket = ctl.store.pools.get_ticket

        async def counted(ticket_id: str) -> TicketRow | None:
            reads.append(ticket_id)
            return await get_ticket(ticket_id)

        ctl.store.pools.get_ticket = counted  # type: ignore[method-assign]
        ticket = await ctl.create_ticket(owner="o", pool="p")
        with pytest.raises(exceptions.TicketTimeout):
            await ctl.wait_ticket(ticket.id, timeout=0)
        assert reads == []  # known to be waiting: created here, unchanged since
        with pytest.raises(exceptions.TicketTimeout):
            await ctl.wait_ticket(ticket.id, timeout=0)
        assert reads == [ticket.id]  # the second wait reads, as any wait does
        waiter = asyncio.ensure_future(ctl.wait_ticket(ticket.id, timeout=5))
        await asyncio.sleep(0)
        closed = await ctl.close_ticket(ticket.id)
        assert (await waiter).state is TicketState.CANCELLED is closed.state


async def test_a_ticket_changed_before_its_wait_is_read() -> None:
    async with controller({"min_ready": 0, "max": 0}) as ctl:
        ticket = await ctl.create_ticket(owner="o", pool="p")
        await ctl.close_ticket(ticket.id)
        got = await ctl.wait_ticket(ticket.id, timeout=0)
        assert got.state is TicketState.CANCELLED


def test_ticket_ids_are_distinct_version_4_uuids_across_batches() -> None:
    ids = IdGenerator()
    drawn = [ids.hex() for _ in range(3 * BATCH + 1)]
    assert len(set(drawn)) == len(drawn)
    assert all(uuid.UUID(i).version == 4 and len(i) == 32 for i in drawn)


def test_task_ids_are_canonical_uuids_from_the_same_generator() -> None:
    ids = IdGenerator()
    drawn = [ids.text() for _ in range(BATCH + 1)]
    assert len(set(drawn)) == len(drawn)
    assert all(str(uuid.UUID(i)) == i and uuid.UUID(i).version == 4 for i in drawn)


async def test_a_renewal_of_a_ticket_just_read_is_one_write() -> None:
    async with controller({"min_ready": 0, "max": 0}) as ctl:
        ticket = await ctl.create_ticket(owner="o", pool="p", ttl=60)
        reads: list[str] = []
        get_ticket = ctl.store.pools.get_ticket

        async def counted(ticket_id: str) -> TicketRow | None:
            reads.append(ticket_id)
            return await get_ticket(ticket_id)

        ctl.store.pools.get_ticket = counted  # type: ignore[method-assign]
        renewed = await ctl.renew_ticket(ticket.id, known=ticket)
        assert reads == [] and renewed.expires_at is not None
        assert ticket.expires_at is not None and renewed.expires_at >= ticket.expires_at
        await ctl.close_ticket(ticket.id)
        with pytest.raises(exceptions.TicketClosed):
            await ctl.renew_ticket(ticket.id, known=ticket)  # the write sees it closed


async def test_a_ticket_created_here_is_read_from_memory_until_it_changes() -> None:
    """Catches a memory copy that goes stale: read after its renewal (the old expiry) or after
    its assignment or cancellation (still ``waiting``), or kept for a shared store; and a
    read of the store for a ticket created here and unchanged since (issue 8 item 3)."""
    async with controller({"min_ready": 0, "max": 1}) as ctl:
        reads: list[str] = []
        get_ticket = ctl.store.pools.get_ticket

        async def counted(ticket_id: str) -> TicketRow | None:
            reads.append(ticket_id)
            return await get_ticket(ticket_id)

        ctl.store.pools.get_ticket = counted  # type: ignore[method-assign]
        held = await ctl.wait_ticket((await ctl.create_ticket(owner="o", pool="p")).id, timeout=30)
        assert held.state is TicketState.ASSIGNED
        ticket = await ctl.create_ticket(owner="o", pool="p", ttl=60)
        reads.clear()
        assert await ctl.get_ticket(ticket.id) == ticket
        assert reads == [], "created here and unchanged: no read"
        renewed = await ctl.renew_ticket(ticket.id, known=ticket)
        assert await ctl.get_ticket(ticket.id) == renewed, "the renewal replaces the copy"
        await ctl.close_ticket(held.id)  # its VM goes; a new one is spawned for the waiter
        deadline = asyncio.get_running_loop().time() + 30
        while (await ctl.get_ticket(ticket.id)).state is TicketState.WAITING:
            assert asyncio.get_running_loop().time() < deadline, "the assignment is never seen"
            await asyncio.sleep(0.01)
        assert (await ctl.get_ticket(ticket.id)).state is TicketState.ASSIGNED
        other = await ctl.create_ticket(owner="o", pool="p")
        await ctl.close_ticket(other.id)
        assert (await ctl.get_ticket(other.id)).state is TicketState.CANCELLED
