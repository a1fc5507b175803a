"""A new ticket on a warm pool is inserted and assigned in ONE store unit (issue 14: the insert,
the assignment round's read and its write were three thread hops on the warm path), and the
round that decides it is the one decision rule: what it leaves undone is decided again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from corral.pools.model import TicketState
from corral.store import open_store
from corral.store.pools import AllocationInputs, AssignWrite
from corral.store.sql.executor import SqlExecutor

from .conftest import controller, counts, eventually

LONG_TICK = 60.0
"""No maintenance tick (which re-kicks the assignment) happens within a test."""


async def _ready(ctl: Any, n: int) -> None:
    await eventually(ctl, lambda: _has_ready(ctl, n))


async def _has_ready(ctl: Any, n: int) -> bool:
    return (await counts(ctl)).get("ready", 0) >= n


async def test_a_fresh_ticket_on_a_warm_pool_costs_one_store_unit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when the create inserts, then lets a round read and write (three units, and the
    ticket comes back waiting): the create must come back assigned after one unit."""
    store = await open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    try:
        async with controller({"min_ready": 2}, store=store, tick=LONG_TICK) as ctl:
            await _ready(ctl, 2)
            await eventually(ctl, _idle(ctl))
            units: list[str] = []
            real_run, real_read = SqlExecutor.run, SqlExecutor.read

            async def run(self: SqlExecutor, fn: Callable[..., Any]) -> Any:
                units.append("run")
                return await real_run(self, fn)

            async def read(self: SqlExecutor, fn: Callable[..., Any]) -> Any:
                units.append("read")
                return await real_read(self, fn)

            monkeypatch.setattr(SqlExecutor, "run", run)
            monkeypatch.setattr(SqlExecutor, "read", read)
            ticket = await ctl.create_ticket(owner="alice", pool="p")
            assert units == ["run"]
            monkeypatch.undo()
            assert ticket.state is TicketState.ASSIGNED and ticket.vm is not None, (
                ctl.assignment._starved,
                await counts(ctl),
                await ctl.get_ticket(ticket.id),
            )
            vm = await ctl.get_vm(ticket.vm)
            assert (vm.state.value, vm.ticket) == ("in_use", ticket.id)
            stored = await ctl.get_ticket(ticket.id)
            assert (stored.state, stored.vm) == (TicketState.ASSIGNED, ticket.vm)
    finally:
        await store.close()


def _idle(ctl: Any) -> Callable[[], Any]:
    async def check() -> bool:
        return bool(ctl.assignment.idle and ctl.preallocation.idle)

    return check


async def test_the_created_event_comes_before_the_assigned_one() -> None:
    """Subscribers see the ticket waiting, then assigned (the order of the store's writes),
    and a waiter of the create's answer needs no wake-up: it is assigned already."""
    async with controller({"min_ready": 1}, tick=LONG_TICK) as ctl:
        await _ready(ctl, 1)
        async with ctl.events.subscribe() as events:
            ticket = await ctl.create_ticket(owner="alice", pool="p")
            seen = []
            while len(seen) < 2:
                event = await events.get(timeout=5)
                if event.kind == "ticket" and event.id == ticket.id:
                    seen.append(event.state)
        assert seen == ["waiting", "assigned"]
        assert ticket.state is TicketState.ASSIGNED
        waited = await ctl.wait_ticket(ticket.id, timeout=0)
        assert (waited.state, waited.vm) == (TicketState.ASSIGNED, ticket.vm)


async def test_a_refused_write_of_the_insert_unit_is_decided_again() -> None:
    """The insert unit's write is refused (as when another host took the VM first): the
    ticket must not stay waiting beside the ready VM. Fails when a refused write kicks no
    round (nothing else would: no tick, no VM change within the test)."""
    async with controller({"min_ready": 1, "max": 1}, tick=LONG_TICK) as ctl:
        await _ready(ctl, 1)
        await eventually(ctl, _idle(ctl))
        real = ctl.store.pools.insert_ticket_assigning
        refused: list[AssignWrite] = []

        async def refusing(row: Any, pools: Any, *, shared: Any = None, decide: Any) -> Any:
            def wrong(inputs: AllocationInputs) -> Sequence[AssignWrite]:
                # the same decision, its condition stale: a load the VM does not have
                writes = [
                    AssignWrite(w.ticket, ((w.vms[0][0], 1),), w.now, slots=2)
                    for w in decide(inputs)
                ]
                refused.extend(writes)
                return writes

            return await real(row, pools, shared=shared, decide=wrong)

        ctl.store.pools.insert_ticket_assigning = refusing  # type: ignore[method-assign]
        ticket = await ctl.create_ticket(owner="alice", pool="p")
        assert refused and ticket.state is TicketState.WAITING
        got = await asyncio.wait_for(ctl.wait_ticket(ticket.id, timeout=5), 6)
        assert got.state is TicketState.ASSIGNED


async def test_a_starved_assigner_only_inserts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tickets wait and no VM is ready: a create must not read the whole queue in its unit
    (issue 8 item 3); it inserts and kicks the round, which counts ready VMs first."""
    async with controller({"min_ready": 0, "max": 1}, tick=LONG_TICK) as ctl:
        first = await ctl.create_ticket(owner="alice", pool="p")
        got = await ctl.wait_ticket(first.id, timeout=5)
        assert got.state is TicketState.ASSIGNED
        second = await ctl.create_ticket(owner="bob", pool="p")  # max 1: starved now
        assert second.state is TicketState.WAITING
        await eventually(ctl, _idle(ctl))
        assert ctl.assignment._starved
        calls: list[str] = []
        real = ctl.store.pools.insert_ticket_assigning

        async def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append("insert_ticket_assigning")
            return await real(*args, **kwargs)

        monkeypatch.setattr(ctl.store.pools, "insert_ticket_assigning", counted)
        third = await ctl.create_ticket(owner="carol", pool="p")
        assert third.state is TicketState.WAITING and calls == []
        await ctl.close_ticket(first.id)
        assert (await ctl.wait_ticket(second.id, timeout=5)).state is TicketState.ASSIGNED
