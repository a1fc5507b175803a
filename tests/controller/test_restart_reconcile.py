"""Reconciliation follows the restart rules: a store never terminates machines it did not create
(issue 8 item 7) unless told to adopt them; its own leaks are still swept."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.backends.base import Handle
from corral.backends.fake import FakeBackend
from corral.config import parse_config
from corral.controller import Controller, recovery
from corral.controller import reconcile as reconciliation
from corral.pools.model import VM, VMState
from corral.store import Store, open_store
from corral.testing import ManualClock

from .conftest import controller, counts, eventually, fake_backend

OLD_MACHINES = ("p-000101", "p-000102", "p-000103")
"""Machines an earlier store made (it had issued 103 names): the fresh store issues p-000001..."""


def _config(**pool: Any) -> Any:
    raw: dict[str, Any] = {
        "backend": {"type": "fake"},
        "max": 5,
        "min_ready": 1,
        "poll_interval": 0.01,
        "terminate_timeout": 5,
        "spawn_timeout": 5,
    }
    raw.update(pool)
    return parse_config({"store": "memory://", "pools": {"p": raw}}, env={})


async def _fake_with_old_machines() -> FakeBackend:
    fake = fake_backend()
    for name in OLD_MACHINES:
        await fake.inject(name)
    return fake


async def test_a_fresh_store_reports_machines_it_never_created_and_keeps_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # breakage caught: sweeping every listed machine the store does not hold alive, whatever
    # the store's history (what a mistyped store path did to a backend full of machines)
    clock = ManualClock()
    fake = await _fake_with_old_machines()
    store = await open_store("memory://")
    caplog.set_level(logging.WARNING, logger="corral.controller.recovery")
    ctl = await Controller.create(
        _config(sweep_interval=30), store=store, backends={"p": fake}, clock=clock, tick=60
    )
    try:
        plan = (await ctl.reconcile())["p"]
        assert [h.name for h in plan.foreign] == list(OLD_MACHINES) and plan.sweep == ()
        warning = [r.getMessage() for r in caplog.records if "never created" in r.getMessage()]
        assert warning and "3 machines" in warning[0] and "--adopt" in warning[0]
        assert "no history" in warning[0]
        await ctl.start()

        async def own_vm_ready() -> bool:
            return (await counts(ctl)).get("ready") == 1

        await eventually(ctl, own_vm_ready)
        # breakage caught: deciding "no history" afresh at each sweep (the pool has VMs now)
        await ctl.maintenance.run_once(wait=True)  # the first run only notes the start
        clock.advance(31)
        await ctl.maintenance.run_once(wait=True)
        await eventually(ctl, lambda: _no_tasks(ctl))
        names = await fake.names()
        assert set(OLD_MACHINES) <= names
        assert names - set(OLD_MACHINES) == {v.name for v in await ctl.list_vms() if v.alive}
    finally:
        await ctl.stop()
        await store.close()


async def _no_tasks(ctl: Controller) -> bool:
    return all(info.done for info in ctl.tasks.list())


async def test_adopt_sweeps_machines_the_store_never_created() -> None:
    fake = await _fake_with_old_machines()
    store = await open_store("memory://")
    ctl = await Controller.create(
        _config(min_ready=0), store=store, backends={"p": fake}, adopt=True
    )
    try:

        async def swept() -> bool:
            return not await fake.names()

        await eventually(ctl, swept)
    finally:
        await ctl.stop()
        await store.close()


async def test_a_store_sweeps_its_own_leaks_also_after_purging_their_rows() -> None:
    # a machine whose VM row was purged long ago is still the store's: its name was issued
    fake = fake_backend()
    store = await open_store("memory://")
    try:
        old = await _failed_vm(store)
        forgotten = await _failed_vm(store)
        assert await store.pools.delete_vm(forgotten)
        for name in (old, forgotten, "p-000999", "p-leaked"):
            await fake.inject(name)
        ctl = await Controller.create(_config(min_ready=0), store=store, backends={"p": fake})
        try:

            async def swept() -> bool:
                return old not in await fake.names() and forgotten not in await fake.names()

            await eventually(ctl, swept)
            assert {"p-000999", "p-leaked"} <= await fake.names()  # never issued: kept
        finally:
            await ctl.stop()
    finally:
        await store.close()


async def _failed_vm(store: Store) -> str:
    row = await store.pools.create_vm("p", state="spawning", now=0.0)
    await store.pools.update_vm(row.name, expect=None, changes={"state": "failed"})
    return row.name


def _vm(name: str, state: VMState) -> VM:
    return VM(name=name, pool="p", state=state, created_at=0.0, state_since=0.0, id_in_pool=0)


def test_plan_puts_each_machine_where_its_rule_says() -> None:
    # breakage caught: a plan that mixes up the groups (a lost VM terminated as an orphan, a
    # terminating one marked failed, a busy one touched)
    vms = [
        _vm("p-000001", VMState.READY),  # listed: keep
        _vm("p-000002", VMState.READY),  # unlisted: lost
        _vm("p-000003", VMState.TERMINATING),  # unlisted: gone
        _vm("p-000004", VMState.RELEASING),  # listed, no task: orphan
        _vm("p-000005", VMState.SPAWNING),  # a task drives it
        _vm("p-000006", VMState.FAILED),  # listed: sweep
    ]
    listed = [Handle(n) for n in ("p-000001", "p-000004", "p-000005", "p-000006", "p-000009")]
    listed.append(Handle("p-000007"))  # issued, no row: sweep
    plan = reconciliation.plan("p", vms, listed, {"p-000005"}, issued=8)
    assert [h.name for h in plan.sweep] == ["p-000006", "p-000007"]
    assert [h.name for h in plan.foreign] == ["p-000009"]
    assert [v.name for v in plan.lost] == ["p-000002"]
    assert [v.name for v in plan.gone] == ["p-000003"]
    assert [v.name for v in plan.orphans] == ["p-000004"]
    adopted = reconciliation.plan("p", vms, listed, {"p-000005"}, issued=8, adopt=True)
    assert [h.name for h in adopted.sweep] == ["p-000006", "p-000007", "p-000009"]
    unlistable = reconciliation.plan("p", vms, None, set(), issued=8)
    assert unlistable.sweep == unlistable.lost == unlistable.gone == ()
    assert [v.name for v in unlistable.orphans] == ["p-000003", "p-000004", "p-000005"]


@pytest.mark.parametrize("flag", [[], ["--adopt"]])
def test_serve_adopt_reaches_the_controller(
    flag: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from corral.api.server import free_port
    from corral.cli.main import app

    seen: list[bool] = []

    async def create(config: object, **kwargs: Any) -> Controller:
        seen.append(bool(kwargs.get("adopt", False)))
        raise exceptions.StoreInUse("stop here")

    monkeypatch.setattr(Controller, "create", create)
    cfg = tmp_path / "corral.yaml"
    cfg.write_text("store: memory://\npools:\n  p: {backend: {type: fake}}\n")
    result = CliRunner().invoke(
        app, ["serve", "--config", str(cfg), "--port", str(free_port()), *flag], env={}
    )
    assert seen == [bool(flag)]
    assert "error: store_in_use: stop here" in result.output


async def test_a_lease_lost_during_start_up_reconciliation_does_not_stop_the_start(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In a cluster the pool's lease may lapse or move between the check that this host leads
    it and the plan's fenced writes: the plan stops for that pool (its new leader's orphan watch,
    sweep and livechecks take over), logged, and the start goes on. Breakage caught: the
    ``StaleEpoch`` escaping reconcile, which failed the host's start (review of issue 11)."""
    async with controller(start=False) as ctl:
        await ctl.store.pools.create_vm("p", state="ready", now=1.0)  # the backend lacks it

        def moved(pool: str) -> Any:
            raise exceptions.StaleEpoch(f"host a does not lead {pool!r}")

        ctl.lease_fence = moved  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="corral.controller.recovery"):
            plans = await recovery.reconcile(ctl)
        assert plans["p"].lost  # the plan was made; its writes were refused
        assert "start-up reconciliation stopped" in caplog.text
        assert [vm.state for vm in await ctl.list_vms()] == [VMState.READY]  # nothing written
