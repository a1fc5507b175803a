"""Chaos: SIGKILL of the controller at random moments under a storm of tickets; backend faults.

After every kill, a restarted controller recovers its tasks and reconciles with the script
backend (whose "VMs" are files, so the inventory survives); once it is quiet: the backend's
inventory equals the VMs the store has alive, no two open tickets share a VM, and every task is in
a state SPEC §4 allows after a restart.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from corral.config import parse_config
from corral.controller import Controller
from corral.pools.model import TicketState, VMState
from corral.store import open_store

from .storm import config as storm_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLES = ROOT / "corral" / "backends" / "examples"
SETTLED_TASK_STATES = {"finished", "recovered", "failed", "waitrecover"}


def _scripts_running(marker: str) -> bool:
    """Whether any process still runs a command naming ``marker`` (scripts outlive a kill)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and b"pytest" not in cmdline:
            return True
    return False


async def _until(check: object, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check() if callable(check) else check
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def _check_after_restart(workdir: Path) -> dict[str, int]:
    """Restart (recover + reconcile) without traffic, wait until quiet, check the invariants."""
    vms_dir = workdir / "vms"
    await _until(lambda: not _scripts_running(str(vms_dir)), 30, "orphaned scripts to finish")
    ctl = await Controller.create(storm_config(workdir), tick=0.1)
    try:

        async def quiet() -> bool:
            if not ctl.idle():
                return False
            half = await ctl.find_vms(states=["spawning", "releasing", "terminating"])
            return not half

        await _until(quiet, 30, "the restarted controller to settle")
        alive = {v.name: v for v in await ctl.list_vms() if v.alive}
        files = {p.name for p in vms_dir.iterdir() if not p.name.startswith(".")}
        assert files == set(alive), f"backend {sorted(files)} != store {sorted(alive)}"
        tickets = await ctl.list_tickets()
        held = [t.vm for t in tickets if t.state is TicketState.ASSIGNED]
        assert len(held) == len(set(held)), "two open tickets share a VM"
        for t in tickets:
            if t.state is TicketState.ASSIGNED:
                assert t.vm is not None
                vm = alive[t.vm]
                assert vm.state is VMState.IN_USE and vm.ticket == t.id
        for vm in alive.values():
            if vm.state is VMState.IN_USE:
                assert vm.ticket in {t.id for t in tickets if t.state is TicketState.ASSIGNED}
        stored = await ctl.store.tasks.list()
        bad = [
            (r.verb, r.progress.state)
            for r in stored
            if r.progress.state not in SETTLED_TASK_STATES
        ]
        assert not bad, f"tasks in states SPEC §4 does not allow after recovery: {bad}"
        return {"alive": len(alive), "tickets": len(tickets)}
    finally:
        await ctl.stop()


@pytest.mark.slow
@pytest.mark.timeout(240)
async def test_sigkill_storm(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CORRAL_CHAOS_SEED", "2026")))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kills = 0
    for _ in range(22):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.controller.storm",
            str(tmp_path),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
        assert line.strip() == b"started", line
        await asyncio.sleep(rng.uniform(0.05, 1.2))
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        kills += 1
        await _check_after_restart(tmp_path)
    assert kills >= 20
    store = await open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    try:
        attempts = (await store.pools.counters("chaos")).get("spawn_attempts", 0)
        tickets = await store.pools.list_tickets()
    finally:
        await store.close()
    assert attempts > 20 and len(tickets) > 50  # the storm did real work between kills


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_backend_faults_still_reach_min_ready_and_leak_nothing(tmp_path: Path) -> None:
    vms = tmp_path / "vms"
    cfg = parse_config(
        {
            "store": f"sqlite:///{tmp_path / 'c.db'}",
            "pools": {
                "f": {
                    "backend": {
                        "type": "script",
                        "new": ["sh", str(SCRIPTS / "faulty_new.sh"), str(vms)],
                        "delete": ["sh", str(SCRIPTS / "flaky_delete.sh"), str(vms)],
                        "list": ["sh", str(EXAMPLES / "list.sh"), str(vms)],
                    },
                    "max": 10,
                    "max_starting": 5,
                    "min_ready": 5,
                    "spawn_timeout": 1.0,
                    "terminate_timeout": 10,
                    "poll_interval": 0.02,
                }
            },
        },
        env={},
    )
    ctl = await Controller.create(cfg, tick=0.1)
    await ctl.start()
    try:

        async def ready() -> bool:
            counts = (await ctl.get_pool("f")).vms
            return counts.get("ready", 0) >= 5 and not counts.get("spawning")

        # churn: 20 tickets closed at once (no reuse) make ~30 spawns through the faults
        for _ in range(20):
            ticket = await ctl.create_ticket(owner="a", pool="f")
            ticket = await ctl.wait_ticket(ticket.id, timeout=30)
            await ctl.close_ticket(ticket.id)
        await _until(ready, 90, "min_ready despite the faults")
        status = await ctl.get_pool("f")
        assert status.stats.spawn_failures > 0
        assert status.stats.spawn_success_rate is not None and status.stats.spawn_success_rate < 1
        assert status.stats.terminate_failures > 0

        async def no_leak() -> bool:
            if await ctl.find_vms(states=["terminating", "spawning"]):
                return False
            alive = {v.name for v in await ctl.list_vms() if v.alive}
            files = {p.name for p in vms.iterdir() if not p.name.startswith(".")}
            return files == alive

        await _until(no_leak, 60, "every failed VM to be cleaned up")
    finally:
        await ctl.stop()
