"""Register and forget on the ``script`` backend, with real commands (issue 15).

The pool's commands append what they were called for to a log file; ``livecheck`` passes only
for a machine whose address file exists (a machine made elsewhere is "up" when its file is).

Breakages caught: ``delete`` run for an external VM (registered or forgotten); the livecheck of a
registration not given the machine's name and address (it would check nothing); a registration
recorded although its livecheck failed; the pool's own ``list`` (which does not name the
registered machine) making reconciliation fail it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.config import parse_config
from corral.controller import Controller
from corral.pools.model import VMState

from .conftest import eventually

NEW = """#!/bin/sh
echo "new $CORRAL_VM_NAME" >> "$1/calls"
echo 127.0.0.1
"""
DELETE = """#!/bin/sh
echo "delete $CORRAL_VM_NAME" >> "$1/calls"
"""
LIVECHECK = """#!/bin/sh
echo "livecheck $CORRAL_VM_NAME $CORRAL_VM_ADDRESS" >> "$1/calls"
test -e "$1/up-$CORRAL_VM_ADDRESS"
"""
LIST = """#!/bin/sh
grep '^new ' "$1/calls" 2>/dev/null | cut -d' ' -f2 | sort -u
"""


def _config(tmp_path: Path, **pool: Any) -> dict[str, Any]:
    scripts = {"new": NEW, "delete": DELETE, "livecheck": LIVECHECK, "list": LIST}
    backend: dict[str, Any] = {"type": "script"}
    for key, text in scripts.items():
        (tmp_path / f"{key}.sh").write_text(text)
        backend[key] = ["sh", str(tmp_path / f"{key}.sh"), str(tmp_path)]
    return {
        "backend": backend,
        "max": 3,
        "min_ready": 0,
        "poll_interval": 0.02,
        "terminate_timeout": 10,
        **pool,
    }


def _calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


async def _controller(tmp_path: Path, **pool: Any) -> Controller:
    cfg = parse_config({"store": "memory://", "pools": {"s": _config(tmp_path, **pool)}}, env={})
    ctl = await Controller.create(cfg, tick=0.05)
    await ctl.start()
    return ctl


async def test_a_registered_machine_is_checked_at_its_address_and_never_deleted(
    tmp_path: Path,
) -> None:
    ctl = await _controller(tmp_path)
    try:
        with pytest.raises(exceptions.MachineNotAlive):
            await ctl.register_vm("s", "lab-1", "192.0.2.40", actor="ops")
        assert _calls(tmp_path) == ["livecheck lab-1 192.0.2.40"]
        assert await ctl.list_vms() == []
        (tmp_path / "up-192.0.2.40").touch()
        vm = await ctl.register_vm("s", "lab-1", "192.0.2.40", actor="ops")
        assert vm.state is VMState.READY and vm.external
        plans = await ctl.reconcile()  # 'list' does not name it: no evidence either way
        assert plans["s"].lost == () and plans["s"].sweep == ()
        ticket = await ctl.wait_ticket(
            (await ctl.create_ticket(owner="u", pool="s")).id, timeout=10
        )
        assert ticket.vm == "lab-1"
        await ctl.close_ticket(ticket.id)

        async def forgotten() -> bool:
            return (await ctl.get_vm("lab-1")).state is VMState.FORGOTTEN

        await eventually(ctl, forgotten, timeout=10)
        assert not [c for c in _calls(tmp_path) if c.startswith("delete")]
    finally:
        await ctl.stop()


async def test_a_forgotten_spawned_vm_is_neither_deleted_nor_swept(tmp_path: Path) -> None:
    ctl = await _controller(tmp_path, min_ready=1)
    try:

        async def ready() -> bool:
            return bool(await ctl.list_vms(state="ready"))

        await eventually(ctl, ready, timeout=10)
        (vm,) = await ctl.list_vms(state="ready")
        await ctl.forget_vm(vm.name, actor="ops")

        async def settled() -> bool:
            row = await ctl.get_vm(vm.name)
            return row.state is VMState.FORGOTTEN and vm.name not in ctl.busy_vms()

        await eventually(ctl, settled, timeout=10)
        assert await ctl.sweep() == 0  # 'list' still names it: only the tombstone protects it
        assert f"delete {vm.name}" not in _calls(tmp_path)
    finally:
        await ctl.stop()
