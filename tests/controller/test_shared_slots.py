"""Shared VMs (``slots``), exclusive and multi-machine tickets through the controller (memory
store, fake backend). Each test names the breakage it catches."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral import exceptions
from corral.controller import Controller
from corral.pools.model import TicketState, VMState

from .conftest import controller, eventually

SHARED: dict[str, Any] = {"slots": 3, "max": 2, "min_ready": 0, "reserve_after": 0.2}


async def check_invariants(ctl: Controller) -> None:
    """Never more than ``slots`` tickets on a VM, an exclusive ticket alone, and the VMs'
    ticket lists and the assigned tickets agree."""
    slots = ctl.limits("p").slots
    vms = await ctl.list_vms(pool="p")
    tickets = {t.id: t for t in await ctl.list_tickets(state=TicketState.ASSIGNED.value)}
    holders: Counter[str] = Counter()
    for t in tickets.values():
        assert len(t.vms) == t.count, f"{t.id} holds {t.vms}, asked for {t.count}"
        holders.update(t.vms)
    for vm in vms:
        assert vm.load <= slots, f"{vm.name} holds {vm.load} tickets > {slots}"
        assert vm.load == len(vm.tickets) == holders[vm.name], vm
        if vm.load:
            assert vm.state is VMState.IN_USE
        for tid in vm.tickets:
            assert tid in tickets, f"{vm.name} lists {tid}, which is not assigned"
            if tickets[tid].exclusive:
                assert vm.tickets == (tid,), f"exclusive {tid} shares {vm.name}"


async def wait_settled(ctl: Controller) -> None:
    await eventually(ctl, lambda: _true(ctl.idle))


async def _true(value: bool) -> bool:
    return value


async def test_shared_tickets_fill_a_vm_and_an_exclusive_one_is_not_starved() -> None:
    """One VM with 2 slots: two shared tickets share it; an exclusive ticket waits; a later
    shared ticket does not jump ahead of it (FIFO, SPEC §3) even though a slot frees. Breakage
    caught: a waiting exclusive ticket not blocking later joins (``_Round.blocked``)."""
    async with controller({"slots": 2, "max": 1, "min_ready": 1}) as ctl:
        a = await ctl.create_ticket(owner="o", pool="p")
        b = await ctl.create_ticket(owner="o", pool="p")
        a, b = await ctl.wait_ticket(a.id, 5), await ctl.wait_ticket(b.id, 5)
        assert a.vm == b.vm and a.vm is not None
        ex = await ctl.create_ticket(owner="o", pool="p", exclusive=True)
        late = await ctl.create_ticket(owner="o", pool="p")
        await ctl.close_ticket(a.id)  # a slot frees: the later shared ticket must not take it
        await wait_settled(ctl)
        assert (await ctl.get_ticket(late.id)).state is TicketState.WAITING
        await check_invariants(ctl)
        await ctl.close_ticket(b.id)
        ex = await ctl.wait_ticket(ex.id, 5)
        assert ex.state is TicketState.ASSIGNED
        await wait_settled(ctl)
        assert (await ctl.get_ticket(late.id)).state is TicketState.WAITING  # shares with none
        await check_invariants(ctl)
        await ctl.close_ticket(ex.id)
        assert (await ctl.wait_ticket(late.id, 5)).state is TicketState.ASSIGNED


async def test_a_shared_vm_is_released_only_when_its_last_ticket_closes() -> None:
    """Breakage caught: the VM terminated when its first ticket closes (the second ticket's
    VM vanishes under it)."""
    async with controller({"slots": 2, "max": 1, "min_ready": 1}) as ctl:
        a = await ctl.create_ticket(owner="o", pool="p")
        b = await ctl.create_ticket(owner="o", pool="p")
        a, b = await ctl.wait_ticket(a.id, 5), await ctl.wait_ticket(b.id, 5)
        assert a.vm is not None
        await ctl.close_ticket(a.id)
        vm = await ctl.get_vm(a.vm)
        assert vm.state is VMState.IN_USE and vm.tickets == (b.id,)
        await ctl.close_ticket(b.id)
        await eventually(ctl, lambda: _gone(ctl, a.vm or ""))


async def _gone(ctl: Controller, name: str) -> bool:
    return not (await ctl.get_vm(name)).alive


async def test_an_operator_terminating_a_shared_vm_fails_every_ticket_on_it() -> None:
    """Breakage caught: only the VM's first ticket failed (the others keep a dead VM)."""
    async with controller({"slots": 3, "max": 1, "min_ready": 1}) as ctl:
        ts = [await ctl.create_ticket(owner="o", pool="p") for _ in range(3)]
        ts = [await ctl.wait_ticket(t.id, 5) for t in ts]
        assert len({t.vm for t in ts}) == 1
        await ctl.terminate_vm(ts[0].vm or "")
        for t in ts:
            assert (await ctl.get_ticket(t.id)).state is TicketState.FAILED


async def test_a_multi_machine_ticket_gets_its_vms_together_and_frees_them_together() -> None:
    """Breakages caught: a multi-machine ticket given fewer VMs, or closing it freeing only
    the first."""
    async with controller({"max": 3, "min_ready": 0}) as ctl:
        t = await ctl.create_ticket(owner="o", pool="p", count=3)
        t = await ctl.wait_ticket(t.id, 5)  # preallocation spawns 3 for it
        assert t.state is TicketState.ASSIGNED and len(set(t.vms)) == 3 and t.vm == t.vms[0]
        await check_invariants(ctl)
        await ctl.close_ticket(t.id)
        for name in t.vms:
            assert (await ctl.get_vm(name)).state in (VMState.TERMINATING, VMState.TERMINATED)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"count": 0}, "count must be"),
        ({"count": 4}, "count 4 is more than"),
        ({"count": "2"}, "count must be"),
        ({"exclusive": "yes"}, "exclusive must be"),
    ],
)
async def test_bad_counts_are_refused_and_change_nothing(
    kwargs: dict[str, Any], words: str
) -> None:
    """A count no pool can ever give (0, above ``max``) is refused at once instead of waiting
    for ever. Breakage caught: ``_check_count`` not called."""
    async with controller({"max": 3, "min_ready": 0}) as ctl:
        with pytest.raises(exceptions.InvalidInput, match=words):
            await ctl.create_ticket(owner="o", pool="p", **kwargs)
        assert await ctl.list_tickets() == []


async def run_storm(seed: int, steps: int) -> None:
    rng = random.Random(seed)
    async with controller(SHARED) as ctl:
        opened: list[str] = []
        for _ in range(steps):
            if opened and rng.random() < 0.4:
                await ctl.close_ticket(opened.pop(rng.randrange(len(opened))))
            else:
                count = rng.choice([1, 1, 1, 2])
                exclusive = rng.random() < 0.25
                t = await ctl.create_ticket(owner="o", pool="p", count=count, exclusive=exclusive)
                opened.append(t.id)
            await asyncio.sleep(0)
            await check_invariants(ctl)
        # then every ticket is served: each holder gives its VMs back once served (a waiting
        # multi-machine ticket may need the VMs of tickets opened after it): nothing starves
        # or deadlocks, i.e. some ticket is served at least every 10 s until all were
        loop = asyncio.get_running_loop()
        progress = loop.time()
        while opened:
            tickets = [await ctl.get_ticket(tid) for tid in opened]
            served = [t for t in tickets if t.state is TicketState.ASSIGNED]
            await check_invariants(ctl)
            for t in served:
                opened.remove(t.id)
                await ctl.close_ticket(t.id)
            if served:
                progress = loop.time()
            else:
                assert loop.time() - progress < 10, f"no ticket served in 10 s: {tickets}"
                await asyncio.sleep(0.02)
        await wait_settled(ctl)
        await check_invariants(ctl)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 25))
def test_slot_accounting_through_the_controller(seed: int, steps: int) -> None:
    """Random shared, exclusive and multi-machine tickets created and closed on a 2-VM pool of
    3 slots: after every step no VM holds more than its slots, an exclusive ticket is alone,
    the VMs' ticket lists match the assigned tickets, and in the end every ticket is served.
    Breakages caught: the store's join not conditional on the count, a shared VM freed by its
    first ticket, a multi-machine ticket assigned partially."""
    asyncio.run(run_storm(seed, steps))
