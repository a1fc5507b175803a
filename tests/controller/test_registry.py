"""Register a machine made elsewhere, forget a VM (issue 15): through the controller facade.

Every test names the deliberate breakage it fails on.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import exceptions
from corral.backends.base import Capability, Handle
from corral.backends.fake import FakeBackend
from corral.controller import Controller, retention
from corral.pools.model import TicketState, VMState
from corral.store import open_store

from .conftest import controller, eventually, fake_backend


class UnlistingFake(FakeBackend):
    """A fake host whose ``list()`` shows only the machines corral spawned (``p-…``), as a
    script backend's ``list`` command would: a registered machine is never listed."""

    async def list(self) -> list[Handle]:
        return [h for h in await super().list() if h.name.startswith("p-")]


def unlisting(**options: Any) -> UnlistingFake:
    from corral.backends import validate_options

    options.setdefault("seed", 7)
    return UnlistingFake(validate_options("fake", options), pool="p")


async def _state(ctl: Controller, name: str, state: VMState) -> None:
    async def check() -> bool:
        return (await ctl.get_vm(name)).state is state

    await eventually(ctl, check, timeout=10)


async def _actions(ctl: Controller, name: str) -> list[tuple[str, str]]:
    return [(e.actor, e.action) for e in await ctl.audit(kind="vm", target=name)]


async def test_a_registered_machine_serves_and_is_forgotten_not_destroyed_when_it_retires() -> None:
    """Breakage caught: the termination task ignoring ``external`` (the fake's ``terminate``
    would be called and the machine removed from the fake host)."""
    fake = fake_backend()
    async with controller({"min_ready": 0}, fake=fake) as ctl:
        await fake.inject("builder-1")
        vm = await ctl.register_vm("p", "builder-1", "192.0.2.10", actor="alice")
        assert (vm.state, vm.external, vm.address) == (VMState.READY, True, "192.0.2.10")
        ticket = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p")).id, timeout=10
        )
        assert ticket.vm == "builder-1"
        await ctl.close_ticket(ticket.id)  # no reuse configured: the VM retires
        await _state(ctl, "builder-1", VMState.FORGOTTEN)
        assert fake.calls.get("terminate", 0) == 0
        assert "builder-1" in await fake.names()  # the machine is untouched
        assert ("alice", "register") in await _actions(ctl, "builder-1")


async def test_an_operator_terminate_of_an_external_vm_forgets_it() -> None:
    """Breakage caught: ``terminate_vm`` reaching the backend for an external VM."""
    fake = fake_backend()
    async with controller({"min_ready": 0}, fake=fake) as ctl:
        await fake.inject("builder-2")
        await ctl.register_vm("p", "builder-2", "192.0.2.11", actor="alice")
        await ctl.terminate_vm("builder-2", actor="bob")
        await _state(ctl, "builder-2", VMState.FORGOTTEN)
        assert fake.calls.get("terminate", 0) == 0
        assert "builder-2" in await fake.names()


async def test_a_machine_failing_its_first_livecheck_is_not_recorded() -> None:
    """Breakage caught: recording the VM before (or regardless of) its livecheck: it would
    serve tickets while dead."""
    fake = fake_backend()
    async with controller({"min_ready": 0}, fake=fake) as ctl:
        await fake.inject("dead-1")
        await fake.kill("dead-1")
        with pytest.raises(exceptions.MachineNotAlive, match=r"dead-1.*livecheck failed"):
            await ctl.register_vm("p", "dead-1", "192.0.2.12", actor="alice")
        with pytest.raises(exceptions.MachineNotAlive):  # a machine the host does not have
            await ctl.register_vm("p", "nowhere-1", "192.0.2.13", actor="alice")
        assert await ctl.store.pools.get_vm("dead-1") is None
        assert await ctl.store.pools.get_vm("nowhere-1") is None
        assert ("alice", "register-refused") in await _actions(ctl, "dead-1")


@pytest.mark.parametrize(
    ("pool", "name", "address", "error", "match"),
    [
        ("nope", "m-1", "192.0.2.1", exceptions.PoolNotFound, "nope"),
        ("p", "p-000042", "192.0.2.1", exceptions.InvalidInput, "naming scheme"),
        ("p", "has space", "192.0.2.1", exceptions.InvalidInput, "letters, digits"),
        ("p", "", "192.0.2.1", exceptions.InvalidInput, "letters, digits"),
        ("p", "x" * 129, "192.0.2.1", exceptions.InvalidInput, "1 to 128"),
        ("p", "m-1", "300.1.2.3", exceptions.InvalidInput, "not an IP address or host name"),
        ("p", "m-1", "bad host!", exceptions.InvalidInput, "not an IP address or host name"),
    ],
)
async def test_bad_registrations_are_refused_and_change_nothing(
    pool: str, name: str, address: str, error: type[Exception], match: str
) -> None:
    """Breakage caught: a missing check (the VM would be recorded) or one after the write."""
    fake = fake_backend()
    async with controller({"min_ready": 0}, fake=fake) as ctl:
        await fake.inject("m-1")
        with pytest.raises(error, match=match):
            await ctl.register_vm(pool, name, address, actor="alice")
        assert await ctl.list_vms() == []
        assert await ctl.audit() == []


async def test_a_taken_name_a_full_pool_and_an_unable_backend_are_refused() -> None:
    """Breakage caught: overwriting a recorded VM; registering past ``max``; ignoring the
    backend's missing ``register`` capability."""
    fake = fake_backend()
    async with controller({"min_ready": 1, "max": 2}, fake=fake) as ctl:
        await eventually(ctl, lambda: _has_ready(ctl))
        await fake.inject("m-1")
        await fake.inject("m-2")
        await ctl.register_vm("p", "m-1", "192.0.2.1", actor="a")
        with pytest.raises(exceptions.VMExists, match="already recorded"):
            await ctl.register_vm("p", "m-1", "192.0.2.1", actor="a")
        with pytest.raises(exceptions.Conflict, match="max is 2"):
            await ctl.register_vm("p", "m-2", "192.0.2.2", actor="a")
        assert await ctl.store.pools.get_vm("m-2") is None
    limited = fake_backend(capabilities=["livecheck", "list", "release"])
    async with controller({"min_ready": 0}, fake=limited) as ctl:
        await limited.inject("m-3")
        assert not ctl.backend("p").has(Capability.REGISTER)
        with pytest.raises(exceptions.CapabilityMissing, match="cannot take machines"):
            await ctl.register_vm("p", "m-3", "192.0.2.3", actor="a")
        assert await ctl.list_vms() == []


async def _has_ready(ctl: Controller) -> bool:
    return bool(await ctl.list_vms(state="ready"))


async def test_reconciliation_never_marks_a_registered_vm_lost() -> None:
    """Breakage caught: ``reconcile.plan`` treating an external VM missing from ``list()`` as
    ``unlisted`` (it would be marked failed and its ticket failed)."""
    fake = unlisting()
    async with controller({"min_ready": 0}, fake=fake) as ctl:
        await fake.inject("builder-3")
        await ctl.register_vm("p", "builder-3", "192.0.2.14", actor="alice")
        plans = await ctl.reconcile()
        assert plans["p"].lost == ()
        assert (await ctl.get_vm("builder-3")).state is VMState.READY


async def test_a_forgotten_vm_is_never_swept_even_after_retention() -> None:
    """Forget a VM corral spawned: the backend still lists it, and only the tombstone keeps the
    leak sweep away. Breakage caught: the restart rule for ``forgotten`` records (it would be
    ``sweep``), the sweep step not skipping tombstones, or retention purging them."""
    fake = fake_backend()
    async with controller({"min_ready": 1, "max": 3}, fake=fake) as ctl:
        await eventually(ctl, lambda: _has_ready(ctl))
        (vm,) = await ctl.list_vms(state="ready")
        forgotten = await ctl.forget_vm(vm.name, actor="carol")
        assert forgotten.external and forgotten.reason == "forgotten by carol"
        await _state(ctl, vm.name, VMState.FORGOTTEN)

        async def settled() -> bool:  # its task done: the rules, not the task, decide now
            return vm.name not in ctl.busy_vms()

        await eventually(ctl, settled)
        assert vm.name in await fake.names()
        assert await ctl.sweep() == 0
        assert ("carol", "forget") in await _actions(ctl, vm.name)
        await retention.prune(ctl, before=ctl.clock() + 10**9)
        assert (await ctl.get_vm(vm.name)).state is VMState.FORGOTTEN
        assert await ctl.sweep() == 0
        plans = await ctl.reconcile(dry_run=True)
        assert vm.name not in [h.name for h in plans["p"].sweep]
        assert fake.calls.get("terminate", 0) == 0
        assert vm.name in await fake.names()
        again = await ctl.forget_vm(vm.name, actor="carol")  # harmless the second time
        assert again.state is VMState.FORGOTTEN


async def test_forgetting_a_vm_in_use_needs_force_which_fails_its_ticket() -> None:
    """Breakage caught: forgetting an in-use VM silently (its job would lose it), or the forced
    path destroying the machine (the mark must precede the ticket's end)."""
    fake = fake_backend()
    async with controller({"min_ready": 1}, fake=fake) as ctl:
        ticket = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="p")).id, timeout=10
        )
        assert ticket.vm is not None
        # the message names the option a CLI user types (it said "use force": no such option)
        with pytest.raises(exceptions.VMInUse, match="corral vm forget --force"):
            await ctl.forget_vm(ticket.vm, actor="carol")
        assert (await ctl.get_vm(ticket.vm)).state is VMState.IN_USE
        assert (await ctl.get_ticket(ticket.id)).state is TicketState.ASSIGNED
        await ctl.forget_vm(ticket.vm, force=True, actor="carol")
        failed = await ctl.get_ticket(ticket.id)
        assert failed.state is TicketState.FAILED
        await _state(ctl, ticket.vm, VMState.FORGOTTEN)
        assert fake.calls.get("terminate", 0) == 0
        assert ticket.vm in await fake.names()
        assert ("carol", "forget") in await _actions(ctl, ticket.vm)


async def test_forget_refuses_what_it_must_not_touch() -> None:
    """Breakage caught: forgetting a spawning VM (its spawn's rollback would destroy the
    machine anyway) or a dead one; an unknown name."""
    fake = fake_backend(spawn_latency=30)
    async with controller({"min_ready": 1}, fake=fake) as ctl:

        async def spawning() -> bool:
            return bool(await ctl.list_vms(state="spawning"))

        await eventually(ctl, spawning)
        (vm,) = await ctl.list_vms(state="spawning")
        with pytest.raises(exceptions.VMStateMismatch, match="still spawning"):
            await ctl.forget_vm(vm.name, actor="carol")
        assert (await ctl.get_vm(vm.name)).external is False
        with pytest.raises(exceptions.VMNotFound):
            await ctl.forget_vm("p-999999", actor="carol")
        await ctl.terminate_vm(vm.name)
        await _state(ctl, vm.name, VMState.TERMINATED)
        with pytest.raises(exceptions.VMStateMismatch, match="nothing to forget"):
            await ctl.forget_vm(vm.name, actor="carol")


async def test_an_external_vm_left_terminating_by_a_crash_is_forgotten_on_restart() -> None:
    """A controller killed while an external VM was terminating leaves it ``terminating`` with
    no task: the restart's orphan path terminates it again. Breakage caught: the submitter
    dropping ``external`` from the termination's arguments (the machine would be destroyed)."""
    store = await open_store("memory://")
    fake = fake_backend()
    try:
        async with controller({"min_ready": 0}, fake=fake, store=store) as ctl:
            await fake.inject("builder-4")
            await ctl.register_vm("p", "builder-4", "192.0.2.15", actor="alice")
        # what a kill -9 between the retiring write and its task leaves behind
        await store.pools.update_vm("builder-4", expect=["ready"], changes={"state": "terminating"})
        async with controller({"min_ready": 0}, fake=fake, store=store) as again:
            await _state(again, "builder-4", VMState.FORGOTTEN)
        assert fake.calls.get("terminate", 0) == 0
        assert "builder-4" in await fake.names()
    finally:
        await store.close()


async def test_pool_info_is_bounded_and_audited() -> None:
    """Breakage caught: unbounded keys, values or key counts reaching the store."""
    async with controller({"min_ready": 0}) as ctl:
        await ctl.set_pool_info("p", "builds", {"last": 17, "ok": True}, actor="dave")
        assert await ctl.get_pool_info("p") == {"builds": {"last": 17, "ok": True}}
        with pytest.raises(exceptions.InvalidInput, match="info key"):
            await ctl.set_pool_info("p", "bad key", 1)
        with pytest.raises(exceptions.InvalidInput, match="more than 16384"):
            await ctl.set_pool_info("p", "big", "x" * 20_000)
        with pytest.raises(exceptions.InvalidInput, match="not JSON"):
            await ctl.set_pool_info("p", "nan", float("nan"))
        with pytest.raises(exceptions.PoolNotFound):
            await ctl.set_pool_info("nope", "k", 1)
        for i in range(99):
            await ctl.set_pool_info("p", f"k{i}", i)
        with pytest.raises(exceptions.InvalidInput, match="100 info keys"):
            await ctl.set_pool_info("p", "one-too-many", 1)
        await ctl.set_pool_info("p", "k1", "replaced")  # an existing key may change
        await ctl.set_pool_info("p", "builds", None)  # deleting makes room
        await ctl.set_pool_info("p", "one-more", 1)
        info = await ctl.get_pool_info("p")
        assert len(info) == 100 and info["k1"] == "replaced" and "builds" not in info
        assert ("dave", "info") in [
            (e.actor, e.action) for e in await ctl.audit(kind="pool", target="p")
        ]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
async def test_concurrent_registrations_of_one_name_record_it_once(
    kind: str, tmp_path: Any
) -> None:
    """Two operators register the same machine at once: both pass the checks and the
    livecheck, one write wins. Breakage caught: a store insert that overwrites (or duplicates)
    a recorded name instead of refusing it (``Conflict`` turned into ``VMExists``)."""
    url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path / 'corral.db'}"
    fake = fake_backend()
    async with controller({"min_ready": 0}, fake=fake, store_url=url) as ctl:
        await fake.inject("twin-1")
        results = await asyncio.gather(
            *(ctl.register_vm("p", "twin-1", f"192.0.2.{n}", actor=f"op{n}") for n in (1, 2)),
            return_exceptions=True,
        )
        won = [r for r in results if not isinstance(r, BaseException)]
        lost = [r for r in results if isinstance(r, BaseException)]
        assert len(won) == 1 and len(lost) == 1, results
        assert isinstance(lost[0], exceptions.VMExists)
        assert [v.name for v in await ctl.list_vms()] == ["twin-1"]
        assert (await ctl.get_vm("twin-1")).address == won[0].address
        registered = [a for a in await _actions(ctl, "twin-1") if a[1] == "register"]
        assert len(registered) == 1


async def test_a_forced_forget_cut_short_by_a_crash_still_never_destroys_the_machine() -> None:
    """``forget --force`` marks the VM in use external, then fails its ticket. A controller
    killed between the two leaves an external VM in use: after the restart it keeps serving its
    ticket, and when that ends the VM is forgotten. Breakage caught: the mark not written before
    the ticket's end, or reconciliation or the release path losing ``external``."""
    store = await open_store("memory://")
    fake = fake_backend()
    try:
        async with controller({"min_ready": 1}, fake=fake, store=store) as ctl:
            ticket = await ctl.wait_ticket(
                (await ctl.create_ticket(owner="u", pool="p")).id, timeout=10
            )
            assert ticket.vm is not None
            # what a kill -9 right after the forced forget's first write leaves behind
            marked = await store.pools.update_vm(
                ticket.vm, expect=["in_use"], changes={"external": True}
            )
            assert marked is not None
        async with controller({"min_ready": 0}, fake=fake, store=store) as again:
            assert (await again.get_vm(ticket.vm)).state is VMState.IN_USE
            assert (await again.get_ticket(ticket.id)).state is TicketState.ASSIGNED
            await again.close_ticket(ticket.id)
            await _state(again, ticket.vm, VMState.FORGOTTEN)
        assert fake.calls.get("terminate", 0) == 0
        assert ticket.vm in await fake.names()
    finally:
        await store.close()
