"""What operators do: hold a VM for debugging, pause, resume and drain a pool; the audit trail."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.pools.model import VMState
from corral.testing import ManualClock

from .conftest import controller, counts, eventually

REUSE = {"sandbox": True, "max_uses": 5}


async def _ready(ctl, n: int) -> None:  # type: ignore[no-untyped-def]
    async def check() -> bool:
        return (await counts(ctl)).get("ready", 0) == n

    await eventually(ctl, check, timeout=10)


async def test_hold_a_vm_in_use_keeps_it_after_its_ticket_until_the_hold_ends() -> None:
    clock = ManualClock()
    async with controller({"min_ready": 1, "reuse": REUSE}, clock=clock) as ctl:
        await _ready(ctl, 1)
        t = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p", sandbox="s")).id, timeout=10
        )
        assert t.vm is not None
        marked = await ctl.hold_vm(t.vm, 3600, actor="alice")
        assert marked.state is VMState.IN_USE and marked.hold_until is not None
        await ctl.close_ticket(t.id)
        # held, neither reused (its sandbox could have) nor terminated
        assert (await ctl.get_vm(t.vm)).state is VMState.HELD
        again = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p", sandbox="s")).id, timeout=10
        )
        assert again.vm != t.vm
        clock.advance(3601)
        await ctl.maintenance.run_once(wait=True)
        gone = await ctl.get_vm(t.vm)
        assert gone.state in (VMState.TERMINATING, VMState.TERMINATED)
        assert gone.reason == "hold expired"
        actions = [(e.actor, e.action, e.target) for e in await ctl.audit(kind="vm")]
        assert ("alice", "hold", t.vm) in actions


async def test_hold_a_ready_vm_takes_it_out_of_service_and_release_terminates_it() -> None:
    async with controller({"min_ready": 1}) as ctl:
        await _ready(ctl, 1)
        (vm,) = await ctl.list_vms(state="ready")
        held = await ctl.hold_vm(vm.name, 60, actor="bob")
        assert held.state is VMState.HELD
        # the pool replaces it: a held VM serves nobody
        await _ready(ctl, 1)
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="u", pool="p")).id, timeout=10)
        assert t.vm != vm.name
        done = await ctl.release_hold(vm.name, actor="bob")
        assert done.state is VMState.TERMINATING and done.reason == "hold released"
        with pytest.raises(exceptions.VMStateMismatch):
            await ctl.release_hold(vm.name, actor="bob")
        for bad in (0, -1, 10**9, "2h", True):
            with pytest.raises(exceptions.InvalidInput):
                await ctl.hold_vm(t.vm or "", bad, actor="bob")  # type: ignore[arg-type]
        with pytest.raises(exceptions.VMNotFound):
            await ctl.hold_vm("nope", 60, actor="bob")


async def test_pause_stops_spawning_and_resume_restarts_it() -> None:
    async with controller({"min_ready": 2}) as ctl:
        await _ready(ctl, 2)
        await ctl.pause_pool("p", actor="carol")
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="u", pool="p")).id, timeout=10)
        assert t.vm is not None  # ready VMs still serve
        await ctl.maintenance.run_once(wait=True)
        c = await counts(ctl)
        assert c.get("ready", 0) == 1 and not c.get("spawning")
        await ctl.resume_pool("p", actor="carol")
        await _ready(ctl, 2)
        actions = [e.action for e in await ctl.audit(kind="pool", target="p")]
        assert actions == ["resume", "paused"]


async def test_drain_terminates_idle_vms_and_in_use_ones_when_their_ticket_ends() -> None:
    async with controller({"min_ready": 3, "reuse": REUSE}) as ctl:
        await _ready(ctl, 3)
        t = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p", sandbox="s")).id, timeout=10
        )
        await _ready(ctl, 3)
        planned = await ctl.drain_pool("p", dry_run=True)
        assert len(planned) == 3
        assert (await counts(ctl)).get("ready", 0) == 3  # a dry run changes nothing
        assert await ctl.audit(kind="pool") == []
        drained = await ctl.drain_pool("p", actor="dave")
        assert {v.name for v in drained} == {v.name for v in planned}
        assert t.vm is not None and (await ctl.get_vm(t.vm)).state is VMState.IN_USE
        await ctl.close_ticket(t.id)  # its sandbox would have reused it: not while draining

        async def empty() -> bool:
            c = await counts(ctl)
            return not any(c.get(s, 0) for s in ("ready", "in_use", "spawning", "releasing"))

        await eventually(ctl, empty, timeout=10)
        assert (await ctl.get_vm(t.vm)).state in (VMState.TERMINATING, VMState.TERMINATED)
        await ctl.resume_pool("p", actor="dave")
        await _ready(ctl, 3)


async def test_a_pool_mode_survives_a_restart() -> None:
    from corral.store import open_store

    store = await open_store("memory://")
    try:
        async with controller({"min_ready": 1}, store=store) as ctl:
            await ctl.pause_pool("p", actor="erin")
        async with controller({"min_ready": 1}, store=store) as ctl:
            await ctl.maintenance.run_once(wait=True)
            assert ctl.pool_mode("p") == "paused"
            assert not (await counts(ctl)).get("spawning")
        with pytest.raises(exceptions.PoolNotFound):
            await ctl.pause_pool("nope", actor="erin")
    finally:
        await store.close()


async def test_bulk_terminate_by_state_and_unused_with_a_dry_run() -> None:
    async with controller({"min_ready": 3, "max": 5}) as ctl:
        await _ready(ctl, 3)
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="u", pool="p")).id, timeout=10)
        await _ready(ctl, 3)
        planned = await ctl.terminate_vms(pool="p", unused=True, dry_run=True)
        assert len(planned) == 3 and t.vm not in {v.name for v in planned}
        assert (await counts(ctl)).get("ready", 0) == 3  # the dry run changed nothing
        in_use = await ctl.terminate_vms(pool="p", states=["in_use"], actor="frank")
        assert [v.name for v in in_use] == [t.vm]
        assert (await ctl.get_ticket(t.id)).state == "failed"
        done = await ctl.terminate_vms(pool="p", unused=True, actor="frank")
        assert {v.name for v in done} == {v.name for v in planned}
        assert all(v.state is VMState.TERMINATING for v in done)
        entries = await ctl.audit(kind="pool", target="p")
        assert [e.action for e in entries] == ["terminate-bulk", "terminate-bulk"]
        with pytest.raises(exceptions.InvalidInput, match="unknown VM state"):
            await ctl.terminate_vms(pool="p", states=["bogus"])
        with pytest.raises(exceptions.PoolNotFound):
            await ctl.terminate_vms(pool="nope")


async def test_a_vm_shows_its_backends_own_state_beside_the_pool_state() -> None:
    async with controller({"min_ready": 1}) as ctl:
        await _ready(ctl, 1)
        (vm,) = await ctl.list_vms(state="ready")
        assert vm.machine_state is None  # the fake backend tracks none
        backend = ctl.backend("p").backend
        backend.machine_state = lambda name: "Up" if name == vm.name else None  # type: ignore[method-assign]
        assert (await ctl.get_vm(vm.name)).machine_state == "Up"
        assert [v.machine_state for v in await ctl.list_vms(pool="p")] == ["Up"]
