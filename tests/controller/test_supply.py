"""Sandbox VMs are supply only for their sandbox (issue: a plain ticket waited forever on a pool
with room), and why a spawn failed is kept on the VM and in the pool's statistics."""

from __future__ import annotations

from corral.pools.model import TicketState, VMState

from .conftest import controller, counts, eventually, fake_backend

REUSE = {"sandbox": True, "max_uses": 5}


async def _use_and_release(ctl, sandbox: str) -> str:  # type: ignore[no-untyped-def]
    ticket = await ctl.wait_ticket(
        (await ctl.create_ticket(owner="u", pool="p", sandbox=sandbox)).id, timeout=10
    )
    assert ticket.vm is not None
    await ctl.close_ticket(ticket.id)

    async def back() -> bool:
        return (await ctl.get_vm(ticket.vm)).state is VMState.READY

    await eventually(ctl, back, timeout=10)
    return str(ticket.vm)


async def test_idle_sandbox_vms_do_not_count_as_ready() -> None:
    # the reproduction: three sandboxes' VMs back in the pool, then a plain ticket and a new
    # sandbox must still be served (before the fix both timed out: 3 "ready", nothing spawned)
    async with controller({"min_ready": 2, "max": 10, "reuse": REUSE}) as ctl:
        used = [await _use_and_release(ctl, s) for s in ("a", "b", "c")]

        async def fresh_kept() -> bool:
            # min_ready counts fresh VMs only: 2 fresh ones beside the 3 idle sandbox VMs
            ready = await ctl.list_vms(pool="p", state="ready")
            return sum(1 for v in ready if v.uses == 0) >= 2

        await eventually(ctl, fresh_kept, timeout=10)
        plain = await ctl.wait_ticket((await ctl.create_ticket(owner="u", pool="p")).id, timeout=10)
        assert plain.state is TicketState.ASSIGNED and plain.vm not in used
        other = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p", sandbox="d")).id, timeout=10
        )
        assert other.state is TicketState.ASSIGNED and other.vm not in used


async def test_a_full_pool_evicts_the_oldest_idle_sandbox_vm() -> None:
    async with controller({"min_ready": 0, "max": 3, "reuse": REUSE}) as ctl:
        used = [await _use_and_release(ctl, s) for s in ("a", "b", "c")]
        assert (await counts(ctl)).get("ready", 0) == 3
        plain = await ctl.wait_ticket((await ctl.create_ticket(owner="u", pool="p")).id, timeout=10)
        assert plain.state is TicketState.ASSIGNED
        # a fresh VM, never one used by another sandbox
        assert plain.vm not in used
        evicted = await ctl.get_vm(used[0])
        assert evicted.state in (VMState.TERMINATING, VMState.TERMINATED)
        assert evicted.reason is not None and "evicted" in evicted.reason
        for name in used[1:]:
            assert (await ctl.get_vm(name)).state is VMState.READY
        # the sandbox whose VM survived still gets it back
        again = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p", sandbox="c")).id, timeout=10
        )
        assert again.vm == used[2]


async def test_a_failed_spawn_keeps_its_reason_and_the_pool_reports_it() -> None:
    fake = fake_backend(spawn_failure_rate=1.0)
    async with controller({"min_ready": 2, "max": 4}, fake=fake) as ctl:

        async def failed_some() -> bool:
            return (await counts(ctl)).get("failed", 0) >= 3

        await eventually(ctl, failed_some, timeout=20)
        failed = [v for v in await ctl.list_vms(state="failed")]
        assert failed and all(v.reason for v in failed)
        assert "injected spawn failure" in str(failed[0].reason)
        status = await ctl.get_pool("p")
        assert status.stats.recent_spawn_failures >= 3
        assert status.stats.last_spawn_error is not None
        assert status.problem is not None and "spawns failed" in status.problem
        assert "FAILING" in await ctl.summary()


async def test_a_healthy_pool_reports_no_problem() -> None:
    async with controller({"min_ready": 2}) as ctl:

        async def ready() -> bool:
            return (await counts(ctl)).get("ready", 0) == 2

        await eventually(ctl, ready)
        assert (await ctl.get_pool("p")).problem is None


async def test_measured_demand_spawns_ahead_and_decays_to_min_ready() -> None:
    from corral.pools import demand
    from corral.testing import ManualClock

    clock = ManualClock()
    async with controller({"min_ready": 1, "max": 20, "max_starting": 20}, clock=clock) as ctl:

        async def ready(n: int) -> bool:
            return (await counts(ctl)).get("ready", 0) == n

        await eventually(ctl, lambda: ready(1))
        # demand as measured: 10 tickets taken just now, spawns lasting 1 s
        ctl.preallocation._spawn_time["p"] = demand.Average(1.0)
        for _ in range(10):
            ctl.consumed("p")
        expected = ctl.expected_in_flight("p")
        assert expected == 9  # 9 intervals over (no less than) one spawn time, x 1 s
        await eventually(ctl, lambda: ready(1 + expected))
        # demand went away: the fresh VMs it no longer needs are retired, and counted as wasted
        clock.advance(300)
        assert ctl.expected_in_flight("p") == 0
        await ctl.maintenance.run_once(wait=True)
        await eventually(ctl, lambda: ready(1))
        stats = (await ctl.get_pool("p")).stats
        assert stats.wasted_spawns == expected


async def test_conditional_terminate_changes_nothing_in_another_state() -> None:
    import pytest

    from corral import exceptions

    async with controller({"min_ready": 1}) as ctl:

        async def ready() -> bool:
            return (await counts(ctl)).get("ready", 0) == 1

        await eventually(ctl, ready)
        (vm,) = await ctl.list_vms(state="ready")
        with pytest.raises(exceptions.VMStateMismatch, match="is ready, not in_use"):
            await ctl.terminate_vm(vm.name, if_states=["in_use"])
        assert (await ctl.get_vm(vm.name)).state is VMState.READY
        with pytest.raises(exceptions.InvalidInput, match="unknown VM state 'bogus'"):
            await ctl.terminate_vm(vm.name, if_states=["bogus"])
        with pytest.raises(exceptions.InvalidInput):
            await ctl.terminate_vm(vm.name, if_states=[])
        done = await ctl.terminate_vm(vm.name, if_states=["ready", "in_use"])
        assert done.state is VMState.TERMINATING


async def test_ticket_metadata_through_the_controller() -> None:
    import pytest

    from corral import exceptions

    async with controller({"min_ready": 1}) as ctl:
        t = await ctl.create_ticket(owner="u", pool="p", meta={"task": "123", "chroot": "f41"})
        assert t.meta == {"chroot": "f41", "task": "123"}
        got = await ctl.wait_ticket(t.id, timeout=10)
        assert got.meta == {"chroot": "f41", "task": "123"}
        other = await ctl.create_ticket(owner="u", pool="p", meta={"task": "124"})
        assert [x.id for x in await ctl.list_tickets(meta={"task": "123"})] == [t.id]
        (vm,) = await ctl.find_vms(ticket_meta={"task": "123"})
        assert vm.name == got.vm
        bad: list[object] = [
            {"bad key": "x"},
            {"k": "x" * 257},
            {f"k{i}": "v" for i in range(17)},
            {"k": 5},
            {"k": "a\x00b"},
            ["task=1"],
        ]
        for meta in bad:
            with pytest.raises(exceptions.InvalidInput, match="meta"):
                await ctl.create_ticket(owner="u", pool="p", meta=meta)  # type: ignore[arg-type]
        with pytest.raises(exceptions.InvalidInput, match="meta filter"):
            await ctl.list_tickets(meta={"bad key": "x"})
        assert len(await ctl.list_tickets()) == 2  # the refused ones changed nothing
        await ctl.close_ticket(other.id)
