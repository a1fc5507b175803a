"""The store writes of VM tasks: what a spawn and a termination write, and what they need not."""

from __future__ import annotations

from typing import Any

from corral.controller import Controller
from corral.pools.model import TicketState, VMState
from corral.store import open_store
from corral.store.pools import VMRow

from .conftest import controller, eventually, fake_backend


def _record_vm_writes(ctl: Controller) -> list[tuple[str, dict[str, object]]]:
    """Wrap the store's ``update_vm`` to record every (VM, changes) written."""
    writes: list[tuple[str, dict[str, object]]] = []
    pools: Any = ctl.store.pools
    original = pools.update_vm

    async def update_vm(name: str, **kwargs: Any) -> VMRow | None:
        writes.append((name, dict(kwargs["changes"])))
        result: VMRow | None = await original(name, **kwargs)
        return result

    pools.update_vm = update_vm
    return writes


async def _ready_vm(ctl: Controller) -> str:
    async def ready() -> bool:
        return bool(await ctl.list_vms(state="ready"))

    await eventually(ctl, ready)
    return (await ctl.list_vms(state="ready"))[0].name


async def test_a_vm_up_at_its_first_poll_gets_handle_and_ready_in_one_write() -> None:
    async with controller({"min_ready": 1}, start=False) as ctl:
        writes = _record_vm_writes(ctl)
        await ctl.start()
        name = await _ready_vm(ctl)
        mine = [changes for vm, changes in writes if vm == name]
        assert len(mine) == 1
        assert mine[0]["state"] == "ready" and mine[0]["handle"]
        vm = await ctl.get_vm(name)
        assert vm.handle is not None and vm.address


async def test_a_vm_not_up_yet_has_its_handle_stored_before_the_wait() -> None:
    fake = fake_backend(spawn_latency=0.2)
    async with controller({"min_ready": 1}, fake=fake, start=False) as ctl:
        writes = _record_vm_writes(ctl)
        await ctl.start()
        name = await _ready_vm(ctl)
        mine = [changes for vm, changes in writes if vm == name]
        assert mine and sorted(mine[0]) == ["handle"]
        assert mine[-1]["state"] == "ready"


async def test_terminations_are_driven_without_a_task_record() -> None:
    store = await open_store("memory://")
    fake = fake_backend(terminate_latency=0.5)
    try:
        async with controller({"min_ready": 1}, fake=fake, store=store) as ctl:
            ticket = await ctl.create_ticket(owner="a", pool="p")
            ticket = await ctl.wait_ticket(ticket.id, timeout=5)
            assert ticket.state is TicketState.ASSIGNED and ticket.vm is not None
            name = ticket.vm
            await ctl.close_ticket(ticket.id)
            assert (await ctl.get_vm(name)).state is VMState.TERMINATING
            assert ctl.busy(name)  # a task of ours drives it...
            stored = [t.row.tag for t in await store.tasks.load_all()]
            assert f"vm:{name}" not in stored  # ...that the store never heard of
        # the controller stopped mid-termination: the next one terminates the VM on start
        assert name in await fake.names()
        async with controller({"min_ready": 0}, fake=fake, store=store) as again:

            async def gone() -> bool:
                return (await again.get_vm(name)).state is VMState.TERMINATED

            await eventually(again, gone)
        assert name not in await fake.names()
    finally:
        await store.close()
