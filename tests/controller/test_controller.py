"""The controller on the memory store and the fake backend: fast, event-driven behaviour."""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.controller import Controller
from corral.pools.model import TicketState, VMState
from corral.store import open_store
from corral.testing import ManualClock

from .conftest import controller, counts, eventually, fake_backend


async def _ready(ctl: Controller, n: int) -> None:
    async def check() -> bool:
        return (await counts(ctl)).get("ready", 0) >= n

    await eventually(ctl, check)


async def test_keeps_min_ready_within_max() -> None:
    async with controller({"min_ready": 3, "max": 4, "max_starting": 2}) as ctl:
        await _ready(ctl, 3)
        c = await counts(ctl)
        assert c.get("ready") == 3 and c.get("spawning", 0) == 0
        status = await ctl.get_pool("p")
        assert status.stats.spawn_attempts == 3 and status.stats.spawn_success_rate == 1.0


async def test_acquire_close_terminates_and_replaces() -> None:
    fake = fake_backend()
    async with controller({"min_ready": 1}, fake=fake) as ctl:
        ticket = await ctl.create_ticket(owner="alice", pool="p")
        ticket = await ctl.wait_ticket(ticket.id, timeout=5)
        assert ticket.state is TicketState.ASSIGNED and ticket.vm is not None
        vm = await ctl.get_vm(ticket.vm)
        assert vm.state is VMState.IN_USE and vm.ticket == ticket.id and vm.address
        assert [v.name for v in await ctl.find_vms(address=vm.address)] == [vm.name]
        assert [v.name for v in await ctl.find_vms(ticket=ticket.id)] == [vm.name]
        closed = await ctl.close_ticket(ticket.id)
        assert closed.state is TicketState.CLOSED
        assert (await ctl.close_ticket(ticket.id)).state is TicketState.CLOSED  # idempotent

        async def gone() -> bool:
            return (await ctl.get_vm(vm.name)).state is VMState.TERMINATED

        await eventually(ctl, gone)
        assert vm.name not in await fake.names()
        await _ready(ctl, 1)  # replaced
        wait = (await ctl.get_pool("p")).stats.wait_p50
        assert wait is not None and wait >= 0


async def test_reuse_for_same_sandbox_only() -> None:
    async with controller({"min_ready": 2, "reuse": {"sandbox": True, "max_uses": 2}}) as ctl:
        await _ready(ctl, 2)
        first = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="a", pool="p", sandbox="s1")).id, timeout=5
        )
        await ctl.close_ticket(first.id)

        async def back() -> bool:
            assert first.vm is not None
            return (await ctl.get_vm(first.vm)).state is VMState.READY

        await eventually(ctl, back)
        other = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="b", pool="p", sandbox="s2")).id, timeout=5
        )
        assert other.vm != first.vm
        again = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="a", pool="p", sandbox="s1")).id, timeout=5
        )
        assert again.vm == first.vm
        await ctl.close_ticket(again.id)  # second use reaches max_uses: terminated

        async def retired() -> bool:
            assert first.vm is not None
            return (await ctl.get_vm(first.vm)).state is VMState.TERMINATED

        await eventually(ctl, retired)


async def test_waiting_ticket_spawns_on_demand_and_priority_wins() -> None:
    async with controller({"min_ready": 0, "max": 1}, start=False) as ctl:
        low = await ctl.create_ticket(owner="a", pool="p", priority=0)
        high = await ctl.create_ticket(owner="b", pool="p", priority=5)
        await ctl.start()
        got = await ctl.wait_ticket(high.id, timeout=5)
        assert got.state is TicketState.ASSIGNED
        assert (await ctl.get_ticket(low.id)).state is TicketState.WAITING
        with pytest.raises(exceptions.TicketTimeout):
            await ctl.wait_ticket(low.id, timeout=0.05)
        await ctl.close_ticket(high.id)
        assert (await ctl.wait_ticket(low.id, timeout=5)).state is TicketState.ASSIGNED


async def test_tags_match_pool_and_no_match_is_an_error() -> None:
    async with controller({"tags": ["x86", "fedora"], "min_ready": 1}) as ctl:
        t = await ctl.create_ticket(owner="a", tags=["fedora"])
        assert (await ctl.wait_ticket(t.id, timeout=5)).state is TicketState.ASSIGNED
        with pytest.raises(exceptions.NoMatchingPool):
            await ctl.create_ticket(owner="a", tags=["arm"])


async def test_max_per_owner_makes_only_that_owner_wait() -> None:
    async with controller({"min_ready": 3, "max_per_owner": 1}) as ctl:
        await _ready(ctl, 3)
        a1 = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        a2 = await ctl.create_ticket(owner="a", pool="p", priority=9)
        b1 = await ctl.wait_ticket((await ctl.create_ticket(owner="b", pool="p")).id, timeout=5)
        assert a1.state is b1.state is TicketState.ASSIGNED
        assert (await ctl.get_ticket(a2.id)).state is TicketState.WAITING
        await ctl.close_ticket(a1.id)
        assert (await ctl.wait_ticket(a2.id, timeout=5)).state is TicketState.ASSIGNED


async def test_lease_expiry_and_renew() -> None:
    clock = ManualClock()
    async with controller({"min_ready": 1, "ticket_ttl": 10}, clock=clock, tick=60) as ctl:
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        clock.advance(6)
        renewed = await ctl.renew_ticket(t.id)
        assert renewed.expires_at == clock.now + 10
        clock.advance(6)
        await ctl.maintenance.run_once(wait=True)
        assert (await ctl.get_ticket(t.id)).state is TicketState.ASSIGNED
        clock.advance(5)
        await ctl.maintenance.run_once(wait=True)
        expired = await ctl.get_ticket(t.id)
        assert expired.state is TicketState.EXPIRED and expired.reason == "lease expired"
        assert t.vm is not None
        vm_name = t.vm

        async def reclaimed() -> bool:
            return (await ctl.get_vm(vm_name)).state is VMState.TERMINATED

        await eventually(ctl, reclaimed)
        with pytest.raises(exceptions.TicketClosed):
            await ctl.renew_ticket(t.id)


async def test_livecheck_failures_terminate_after_attempts() -> None:
    clock = ManualClock()
    fake = fake_backend()
    pool = {"min_ready": 2, "livecheck": {"period": 10, "attempts": 2}}
    async with controller(pool, fake=fake, clock=clock, tick=60) as ctl:
        await _ready(ctl, 2)
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        ready = (await ctl.list_vms(state="ready"))[0]
        assert t.vm is not None
        await fake.kill(ready.name)
        await fake.kill(t.vm)
        clock.advance(11)
        await ctl.maintenance.run_once(wait=True)
        assert (await ctl.get_vm(ready.name)).livecheck_failures == 1
        assert (await ctl.get_vm(ready.name)).state is VMState.READY
        clock.advance(11)
        await ctl.maintenance.run_once(wait=True)
        failed = await ctl.get_ticket(t.id)
        assert failed.state is TicketState.FAILED and "livechecks" in (failed.reason or "")

        async def both_gone() -> bool:
            states = {(await ctl.get_vm(n)).state for n in (ready.name, t.vm or "")}
            return states == {VMState.TERMINATED}

        await eventually(ctl, both_gone)
        assert (await ctl.get_pool("p")).stats.livecheck_failures == 4


async def test_idle_and_age_limits_retire_vms() -> None:
    clock = ManualClock()
    pool = {"min_ready": 1, "reuse": {"sandbox": True, "idle_timeout": 30, "max_age": 1000}}
    async with controller(pool, clock=clock, tick=60) as ctl:
        t = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="a", pool="p", sandbox="s")).id, timeout=5
        )
        await ctl.close_ticket(t.id)
        assert t.vm is not None
        used = t.vm

        async def back() -> bool:
            return (await ctl.get_vm(used)).state is VMState.READY

        await eventually(ctl, back)
        clock.advance(31)
        await ctl.maintenance.run_once(wait=True)
        vm = await ctl.get_vm(used)
        assert vm.state in (VMState.TERMINATING, VMState.TERMINATED)
        assert vm.reason == "idle_timeout"
        fresh = [v for v in await ctl.list_vms(state="ready")]
        assert fresh and all(v.fresh for v in fresh)  # fresh VMs are kept while idle
        clock.advance(1000)
        await ctl.maintenance.run_once(wait=True)
        reasons = {(await ctl.get_vm(v.name)).reason for v in fresh}
        assert reasons == {"max_age"}


async def test_terminate_a_spawning_vm() -> None:
    fake = fake_backend(spawn_latency=60)
    async with controller({"min_ready": 1, "spawn_timeout": 120}, fake=fake) as ctl:

        async def spawning() -> bool:
            vms = await ctl.list_vms(state="spawning")
            return bool(vms) and vms[0].handle is not None

        await eventually(ctl, spawning)
        (vm,) = await ctl.list_vms(state="spawning")
        await ctl.terminate_vm(vm.name)

        async def gone() -> bool:
            return (await ctl.get_vm(vm.name)).state is VMState.TERMINATED

        await eventually(ctl, gone)
        assert vm.name not in await fake.names()


async def test_terminate_vm_in_use_fails_its_ticket() -> None:
    async with controller({"min_ready": 1}) as ctl:
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        assert t.vm is not None
        vm = await ctl.terminate_vm(t.vm)
        assert vm.state in (VMState.TERMINATING, VMState.TERMINATED)
        assert (await ctl.get_ticket(t.id)).state is TicketState.FAILED
        with pytest.raises(exceptions.VMNotFound):
            await ctl.terminate_vm("nope")


async def test_spawn_faults_are_retried_counted_and_leak_nothing() -> None:
    fake = fake_backend(
        spawn_failure_rate=0.3, boot_failure_rate=0.1, garbage_rate=0.1, terminate_failure_rate=0.3
    )
    async with controller({"min_ready": 4, "max": 6}, fake=fake) as ctl:

        async def settled() -> bool:
            c = await counts(ctl)
            return c.get("ready", 0) == 4 and not c.get("spawning") and not c.get("terminating")

        await eventually(ctl, settled, timeout=20)
        stats = (await ctl.get_pool("p")).stats
        assert stats.spawn_failures > 0 and stats.spawn_success_rate is not None
        assert stats.spawn_success_rate < 1.0
        alive = {v.name for v in await ctl.list_vms() if v.alive}
        assert await fake.names() == alive


async def test_reconcile_sweeps_leaks_and_replaces_lost_vms() -> None:
    store = await open_store("memory://")
    fake = fake_backend()
    try:
        async with controller({"min_ready": 2}, fake=fake, store=store) as ctl:
            await _ready(ctl, 2)
            t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        assert t.vm is not None
        ready = [v.name for v in (await store.pools.list_vms(states=["ready"]))]
        await fake.forget(t.vm)
        await fake.forget(ready[0])
        # a leak: a machine the store recorded (so it issued its name) but holds failed
        leaked = await store.pools.create_vm("p", state="spawning", now=0.0)
        await store.pools.update_vm(leaked.name, expect=None, changes={"state": "failed"})
        await fake.inject(leaked.name)
        async with controller({"min_ready": 2}, fake=fake, store=store) as ctl:
            assert (await ctl.get_vm(t.vm)).state is VMState.FAILED
            assert (await ctl.get_ticket(t.id)).state is TicketState.FAILED
            assert (await ctl.get_vm(ready[0])).state is VMState.FAILED

            async def clean() -> bool:
                alive = {v.name for v in await ctl.list_vms() if v.alive}
                c = await counts(ctl)
                return c.get("ready") == 2 and await fake.names() == alive

            await eventually(ctl, clean)
            assert leaked.name not in await fake.names()
    finally:
        await store.close()


async def test_a_ticket_failed_by_a_lost_vm_names_its_pool_in_its_event() -> None:
    """Breakage caught: the ``failed`` event of a ticket whose VM the backend lost (found by a
    reconciliation, as at a restart) carrying only the VM, so ``corral events --pool p`` (which
    filters by the event's pool) never printed it."""
    fake = fake_backend()
    async with controller({"min_ready": 1}, fake=fake) as ctl:
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        assert t.vm is not None
        await fake.forget(t.vm)
        async with ctl.events.subscribe(kinds=["ticket"]) as events:
            await ctl.reconcile()
            event = await events.get(timeout=5)
        assert (event.id, event.state, event.data.get("pool")) == (t.id, "failed", "p")


async def test_events_and_info_and_summary() -> None:
    async with controller({"min_ready": 1}) as ctl:
        async with ctl.events.subscribe(kinds=["ticket"]) as events:
            t = await ctl.create_ticket(owner="a", pool="p")
            first = await events.get(timeout=5)
            second = await events.get(timeout=5)
            assert (first.id, first.state) == (t.id, "waiting")
            assert (second.id, second.state) == (t.id, "assigned")
            await ctl.close_ticket(t.id)
            closed = await events.get(timeout=5)
            # 'corral events --pool p' filters by the event's pool: without it the ticket's
            # end (closed, expired, failed, cancelled) was left out
            assert (closed.id, closed.state, closed.data.get("pool")) == (t.id, "closed", "p")
        t = await ctl.create_ticket(owner="a", pool="p")
        await ctl.wait_ticket(t.id, timeout=10)
        await ctl.set_pool_info("p", "note", {"maintenance": False})
        assert await ctl.get_pool_info("p") == {"note": {"maintenance": False}}
        await ctl.set_pool_info("p", "note", None)
        assert await ctl.get_pool_info("p") == {}
        text = await ctl.summary()
        assert "pool p (fake" in text and "in_use" in text
        pools = await ctl.list_pools()
        assert [p.name for p in pools] == ["p"] and pools[0].assigned_tickets == 1
        with pytest.raises(exceptions.PoolNotFound):
            await ctl.get_pool("nope")


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"owner": ""}, exceptions.InvalidInput),
        ({"owner": "a\n"}, exceptions.InvalidInput),
        ({"owner": "a", "pool": "nope"}, exceptions.PoolNotFound),
        ({"owner": "a", "priority": True}, exceptions.InvalidInput),
        ({"owner": "a", "ttl": -1}, exceptions.InvalidInput),
        ({"owner": "a", "tags": "x86"}, exceptions.InvalidInput),
        ({"owner": "a", "sandbox": ""}, exceptions.InvalidInput),
    ],
)
async def test_bad_ticket_input_changes_nothing(
    kwargs: dict[str, object], error: type[exceptions.CorralError]
) -> None:
    async with controller({"min_ready": 0}, start=False) as ctl:
        with pytest.raises(error):
            await ctl.create_ticket(**kwargs)  # type: ignore[arg-type]
        assert await ctl.list_tickets() == []


async def test_lookups_reject_bad_input() -> None:
    async with controller({"min_ready": 0}, start=False) as ctl:
        with pytest.raises(exceptions.TicketNotFound):
            await ctl.get_ticket("nope")
        with pytest.raises(exceptions.VMNotFound):
            await ctl.get_vm("nope")
        with pytest.raises(exceptions.InvalidInput):
            await ctl.list_vms(state="bogus")
        with pytest.raises(exceptions.InvalidInput):
            await ctl.list_tickets(state="bogus")
        cancelled = await ctl.close_ticket((await ctl.create_ticket(owner="a", pool="p")).id)
        assert cancelled.state is TicketState.CANCELLED
        assert [t.id for t in await ctl.list_tickets(owner="a", state="cancelled")] == [
            cancelled.id
        ]


async def test_no_lost_wakeup_under_many_waiters() -> None:
    async with controller({"min_ready": 0, "max": 5, "max_starting": 5}) as ctl:
        tickets = [await ctl.create_ticket(owner=f"o{i}", pool="p") for i in range(5)]
        done = await asyncio.gather(*(ctl.wait_ticket(t.id, timeout=5) for t in tickets))
        assert len({t.vm for t in done}) == 5


async def test_spawn_interrupted_by_a_stop_is_rolled_back_on_restart() -> None:
    store = await open_store("memory://")
    fake = fake_backend(spawn_latency=60)
    try:
        async with controller({"min_ready": 1, "spawn_timeout": 120}, fake=fake, store=store) as c:

            async def created() -> bool:
                vms = await c.list_vms(state="spawning")
                return bool(vms) and vms[0].handle is not None

            await eventually(c, created)
            (vm,) = await c.list_vms(state="spawning")
        assert vm.name in await fake.names()  # the backend made it; the task is persisted
        async with controller(
            {"min_ready": 0, "spawn_timeout": 120}, fake=fake, store=store
        ) as ctl:

            async def undone() -> bool:
                return (await ctl.get_vm(vm.name)).state is VMState.FAILED

            await eventually(ctl, undone)
            assert vm.name not in await fake.names()
            assert (await ctl.get_pool("p")).stats.spawn_failures == 1
    finally:
        await store.close()


async def test_secondary_controller_assigns_from_a_shared_store() -> None:
    store = await open_store("memory://")
    fake = fake_backend()
    try:
        async with controller({"min_ready": 2}, fake=fake, store=store) as primary:
            await _ready(primary, 2)
            cfg = primary.config
            secondary = await Controller.create(
                cfg, store=store, backends={"p": fake}, recover=False, tick=0.02
            )
            await secondary.start()
            try:
                t = await secondary.create_ticket(owner="a", pool="p")
                got = await secondary.wait_ticket(t.id, timeout=5)
                assert got.state is TicketState.ASSIGNED
                assert secondary.maintains is False and primary.maintains is True
            finally:
                await secondary.stop()
    finally:
        await store.close()


async def test_periodic_sweep_terminates_a_leak_while_running() -> None:
    clock = ManualClock()
    fake = fake_backend()
    pool = {"min_ready": 1, "sweep_interval": 30}
    async with controller(pool, fake=fake, clock=clock, tick=60) as ctl:
        await _ready(ctl, 1)
        await ctl.maintenance.run_once(wait=True)  # the first run only notes the start
        # a leak: a machine whose name the store issued (a VM it holds failed)
        leak = await ctl.store.pools.create_vm("p", state="spawning", now=0.0)
        await ctl.store.pools.update_vm(leak.name, expect=None, changes={"state": "failed"})
        await fake.inject(leak.name)
        clock.advance(31)
        await ctl.maintenance.run_once(wait=True)

        async def swept() -> bool:
            return leak.name not in await fake.names()

        await eventually(ctl, swept)
        assert len(await fake.names()) == 1  # the pool's own VM is kept


async def test_history_is_purged() -> None:
    clock = ManualClock()
    async with controller({"min_ready": 1}, clock=clock, tick=60) as ctl:
        t = await ctl.wait_ticket((await ctl.create_ticket(owner="a", pool="p")).id, timeout=5)
        await ctl.close_ticket(t.id)
        assert t.vm is not None
        vm_name = t.vm

        async def terminated() -> bool:
            return (await ctl.get_vm(vm_name)).state is VMState.TERMINATED

        await eventually(ctl, terminated)
        clock.advance(ctl.config.history or 0)
        clock.advance(1)
        await ctl.maintenance.run_once(wait=True)
        with pytest.raises(exceptions.VMNotFound):
            await ctl.get_vm(vm_name)
        with pytest.raises(exceptions.TicketNotFound):
            await ctl.get_ticket(t.id)
