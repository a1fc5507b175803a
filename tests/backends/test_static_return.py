"""``corral vm return`` through the controller (issue 15): a static machine in maintenance goes
back into service, named as a machine or as the VM that reserved it; anything else is refused
and nothing changes. Also: a static pool refuses register and forget.

Breakages caught: ``return_machine`` not reaching the backend (the waiting ticket never gets the
machine); a VM name not resolved to its machine; returning a machine that is not in maintenance
accepted; a non-static VM's name taken for a machine; register or forget allowed on a pool whose
VMs are reservations of its inventory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import exceptions
from corral.pools.model import TicketState

from .test_static_pool import acquire, address_of, loopback, machine_state, static_pool, until


async def test_return_puts_a_machine_back_and_a_waiting_ticket_gets_it(tmp_path: Path) -> None:
    async with static_pool(tmp_path, {"machines": loopback(1)}) as (ctl, backend):
        first = await acquire(ctl, "u1")
        assert first.vm is not None
        (tmp_path / "fail-m1").touch()
        await ctl.close_ticket(first.id)

        async def in_maintenance() -> bool:
            return (await machine_state(backend, "m1"))[0] == "maintenance"

        await until(in_maintenance, "m1 in maintenance")
        waiting = await ctl.create_ticket(owner="u2", pool="p")
        (tmp_path / "fail-m1").unlink()
        with pytest.raises(exceptions.MachineNotFound, match="nope"):
            await ctl.return_machine("nope", actor="ops")
        pool, status = await ctl.return_machine("m1", actor="ops")
        assert (pool, status.name, status.state.value) in {
            ("p", "m1", "free"),
            ("p", "m1", "reserved"),  # the waiting reservation took it at once
        }
        served = await ctl.wait_ticket(waiting.id, timeout=30)
        assert served.state is TicketState.ASSIGNED
        assert await address_of(ctl, served) == "127.0.0.1"
        with pytest.raises(exceptions.Conflict, match="not in maintenance"):
            await ctl.return_machine("m1", actor="ops")
        actions = [(e.actor, e.action, e.target) for e in await ctl.audit(kind="vm")]
        assert ("ops", "return", "m1") in actions


async def test_return_by_the_vm_name_and_refusals(tmp_path: Path) -> None:
    async with static_pool(tmp_path, {"machines": loopback(1, 2)}) as (ctl, backend):
        ticket = await acquire(ctl, "u1")
        assert ticket.vm is not None
        machine = f"m{(await address_of(ctl, ticket)).rsplit('.', 1)[1]}"
        await backend.maintenance(machine, "fan replacement")
        # named by the VM holding it: the machine's maintenance ends
        pool, status = await ctl.return_machine(ticket.vm, actor="ops")
        assert (pool, status.name, status.reason) == ("p", machine, None)
        with pytest.raises(exceptions.CapabilityMissing, match="inventory"):
            await ctl.register_vm("p", "extra-1", "127.0.0.9", actor="ops")
        with pytest.raises(exceptions.CapabilityMissing, match="inventory"):
            await ctl.forget_vm(ticket.vm, force=True, actor="ops")
        assert (await ctl.get_ticket(ticket.id)).state is TicketState.ASSIGNED


async def test_maintenance_through_the_controller(tmp_path: Path) -> None:
    """Breakage caught: the reason not checked (an empty one stored), a VM name not resolved to
    its machine, a machine in maintenance still handed out."""
    async with static_pool(tmp_path, {"machines": loopback(1, 2)}) as (ctl, backend):
        with pytest.raises(exceptions.InvalidInput, match="reason"):
            await ctl.machine_maintenance("m1", "  ", actor="ops")
        assert (await machine_state(backend, "m1")) == ("free", None)
        pool, status = await ctl.machine_maintenance("m1", "disk swap", actor="ops")
        assert (pool, status.state.value, status.reason) == ("p", "maintenance", "disk swap")
        ticket = await acquire(ctl, "u1")
        assert await address_of(ctl, ticket) == "127.0.0.2"  # never the one in maintenance
        assert ticket.vm is not None
        _, held = await ctl.machine_maintenance(ticket.vm, "flaky NIC", actor="ops")
        assert (held.name, held.vm, held.reason) == ("m2", ticket.vm, "flaky NIC")
        with pytest.raises(exceptions.MachineNotFound):
            await ctl.machine_maintenance("m7", "gone", actor="ops")
        actions = [(e.action, e.target, e.detail) for e in await ctl.audit(kind="vm")]
        assert ("maintenance", "m1", "disk swap") in actions
