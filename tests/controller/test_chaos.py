"""Chaos: SIGKILL of the controller inside spawns, terminations, releases and assignments.

The storm (:mod:`tests.controller.storm`) runs a controller and a second assigner on one SQLite
store with the script backend (its "VMs" are files, so the inventory survives any kill). Every
backend command and every store assignment logs its start and end in a marker log; the test
watches that log and kills the storm at the moment an operation of the kind it wants is in flight,
until each kind (spawn, terminate, release, assign) got at least ``CORRAL_CHAOS_KILLS`` kills
(default 3; the full run is ``CORRAL_CHAOS_KILLS=20``) or the iteration cap is reached. Every
third kill lands at a random moment instead.

What is checked, and which deliberate breakage (``tests/mutants.py``) each check catches:

- Right after each kill (before any restart, once the orphaned commands ended), every machine
  the backend has is a VM the store holds alive, and every VM whose ``new`` was running has a
  durable way back: a stored task on that VM holding the spawn's undo; every VM whose release
  was running has its release task and undo stored; every VM whose ``delete`` was running is
  committed ``terminating`` (the termination's durable intent). Catches: the spawn's write-ahead
  ``push_recovery`` deleted (mutant ``spawn-no-write-ahead``).
- Over the whole run, from SQLite triggers that log every assignment write inside its own
  transaction: a VM is only ever taken ``ready`` and free, a ticket only ever ``waiting``, and no
  ticket is ever given two VMs. Catches: the SQL assignment made unconditional (mutant
  ``assign-unconditional``), which two racing assigners turn into double assignments.
- After each restart (recovery + reconciliation, no traffic), once quiet: the backend's inventory
  equals the VMs the store has alive (no leak, nothing lost), an assigned ticket's VM is
  ``in_use`` for it and vice versa, and every task is in a state allowed after recovery.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from corral.config import parse_config
from corral.controller import Controller
from corral.pools.model import TicketState, VMState
from corral.store import open_store

from .storm import MARKERS
from .storm import config as storm_config

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLES = ROOT / "corral" / "backends" / "examples"
SETTLED_TASK_STATES = {"finished", "recovered", "failed", "waitrecover"}
KINDS = ("spawn", "terminate", "release", "assign")
KILLS_PER_KIND = int(os.environ.get("CORRAL_CHAOS_KILLS", "3"))
MAX_ITERATIONS = 12 * KILLS_PER_KIND + 10
DEAD = {VMState.TERMINATED.value, VMState.FAILED.value}

AUDIT = """
CREATE TABLE IF NOT EXISTS chaos_assignments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, side TEXT, vm TEXT, ticket TEXT,
    old_state TEXT, old_other TEXT
);
CREATE TRIGGER IF NOT EXISTS chaos_vm_taken AFTER UPDATE ON vms
WHEN NEW.uses <> OLD.uses
BEGIN
    INSERT INTO chaos_assignments (side, vm, ticket, old_state, old_other)
    VALUES ('vm', NEW.name, NEW.ticket, OLD.state, OLD.ticket);
END;
CREATE TRIGGER IF NOT EXISTS chaos_ticket_taken AFTER UPDATE ON tickets
WHEN NEW.vm IS NOT NULL AND NEW.assigned_at IS NOT OLD.assigned_at
BEGIN
    INSERT INTO chaos_assignments (side, vm, ticket, old_state, old_other)
    VALUES ('ticket', NEW.vm, NEW.id, OLD.state, OLD.vm);
END;
"""
"""Every assignment write, logged by SQLite inside the transaction that makes it (so exactly the
committed ones, whatever the kills): the VM side is the write that counts a use."""


# --- the marker log --------------------------------------------------------------------------


@dataclass
class Markers:
    """Reads the marker log incrementally: which operations are in flight."""

    path: Path
    offset: int = 0
    open: dict[str, tuple[str, int, str]] = field(default_factory=dict)
    """Operation id -> (kind, pid, VM name) for every started, not ended operation."""

    def read(self) -> None:
        """Take in the lines appended since the last read (whole lines only)."""
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            parts = line.split()
            if parts[0] == "start":
                self.open[parts[2]] = (parts[1], int(parts[3]), parts[4])
            elif parts[0] == "end":
                self.open.pop(parts[2], None)

    def in_flight(self) -> dict[str, set[str]]:
        """Kind -> VM names of the operations started, not ended, whose process still lives
        (a command killed by its timeout never logs its end)."""
        found: dict[str, set[str]] = {}
        for op, (kind, pid, vm) in list(self.open.items()):
            if Path(f"/proc/{pid}").exists():
                found.setdefault(kind, set()).add(vm)
            else:
                del self.open[op]
        return found


# --- helpers ---------------------------------------------------------------------------------


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


async def _install_audit(workdir: Path) -> None:
    """Create the store (migrated) and the triggers that log every assignment write."""
    store = await open_store(f"sqlite:///{workdir / 'corral.db'}")
    await store.close()
    with sqlite3.connect(workdir / "corral.db") as conn:
        conn.executescript(AUDIT)


def _check_assignments(workdir: Path) -> int:
    """No VM taken unless ready and free, no ticket taken unless waiting, no ticket given two
    VMs: over every assignment write ever committed. Returns how many VM-side writes there were."""
    with sqlite3.connect(workdir / "corral.db") as conn:
        rows = conn.execute(
            "SELECT side, vm, ticket, old_state, old_other FROM chaos_assignments ORDER BY seq"
        ).fetchall()
    conn.close()
    vms_of: dict[str, set[str]] = {}
    taken = 0
    for side, vm, ticket, old_state, old_other in rows:
        if side == "vm":
            taken += 1
            assert old_state == VMState.READY.value and old_other is None, (
                f"VM {vm} given to ticket {ticket} while {old_state} for ticket {old_other}"
            )
            vms_of.setdefault(ticket, set()).add(vm)
        else:
            assert old_state == TicketState.WAITING.value, (
                f"ticket {ticket} given VM {vm} while {old_state} (VM {old_other})"
            )
    twice = {t: sorted(v) for t, v in vms_of.items() if len(v) > 1}
    assert not twice, f"tickets given two VMs: {twice}"
    return taken


async def _check_at_kill(workdir: Path, flight: dict[str, set[str]]) -> None:
    """Before any restart: what was in flight at the kill has a durable way forward or back."""
    store = await open_store(f"sqlite:///{workdir / 'corral.db'}", migrate=False)
    try:
        vms_dir = workdir / "vms"
        files = sorted(p.name for p in vms_dir.iterdir()) if vms_dir.is_dir() else []
        for name in files:
            if name.startswith("."):
                continue
            row = await store.pools.get_vm(name)
            assert row is not None and row.state not in DEAD, (
                f"the backend has {name} but the store "
                + ("never knew it" if row is None else f"holds it {row.state}")
            )
        stored = await store.tasks.load_all()
        undo_of: dict[str, set[str]] = {}
        for task in stored:
            if task.row.tag.startswith("vm:"):
                names = {r.name for r in task.recoveries}
                undo_of.setdefault(task.row.tag[3:], set()).update(names)
        for name in flight.get("spawn", set()):
            row = await store.pools.get_vm(name)
            assert row is not None, f"VM {name} was being spawned but the store never knew it"
            assert "vm.spawn.undo" in undo_of.get(name, set()), (
                f"VM {name} was being spawned at the kill with no stored undo (state {row.state},"
                f" recoveries {sorted(undo_of.get(name, set()))}): nothing would terminate it"
            )
        for name in flight.get("release", set()):
            assert "vm.release.undo" in undo_of.get(name, set()), (
                f"VM {name} was being released at the kill with no stored release undo"
            )
        for name in flight.get("terminate", set()):
            row = await store.pools.get_vm(name)
            if row is not None and row.state not in DEAD:
                # a VM of ours: its termination's durable intent is its committed state (a
                # machine unknown to the store is a sweep, found again by reconciliation)
                assert row.state == VMState.TERMINATING.value, (
                    f"VM {name} was being deleted at the kill but is {row.state} in the store"
                )
    finally:
        await store.close()


async def _check_after_restart(workdir: Path) -> dict[str, int]:
    """Restart (recover + reconcile) without traffic, wait until quiet, check the invariants."""
    vms_dir = workdir / "vms"
    ctl = await Controller.create(storm_config(workdir), tick=0.1)
    try:

        async def quiet() -> bool:
            if not ctl.idle():
                return False
            half = await ctl.find_vms(
                states=[VMState.SPAWNING, VMState.RELEASING, VMState.TERMINATING]
            )
            return not half

        await _until(quiet, 30, "the restarted controller to settle")
        alive = {v.name: v for v in await ctl.list_vms() if v.alive}
        files = {p.name for p in vms_dir.iterdir() if not p.name.startswith(".")}
        assert files == set(alive), f"backend {sorted(files)} != store {sorted(alive)}"
        tickets = await ctl.list_tickets()
        assigned = {t.id: t for t in tickets if t.state is TicketState.ASSIGNED}
        held = [t.vm for t in assigned.values()]
        assert len(held) == len(set(held)), "two open tickets share a VM"
        for t in assigned.values():
            assert t.vm is not None
            vm = alive[t.vm]
            assert vm.state is VMState.IN_USE and vm.ticket == t.id
        for vm in alive.values():
            if vm.state is VMState.IN_USE:
                assert vm.ticket in assigned, f"VM {vm.name} in use for {vm.ticket}"
        stored = await ctl.store.tasks.list()
        bad = [
            (r.verb, r.progress.state)
            for r in stored
            if r.progress.state not in SETTLED_TASK_STATES
        ]
        assert not bad, f"tasks in states not allowed after recovery: {bad}"
        return {"alive": len(alive), "tickets": len(tickets)}
    finally:
        await ctl.stop()


async def _storm_until_kill(
    workdir: Path, markers: Markers, target: str | None, rng: random.Random
) -> dict[str, set[str]]:
    """Start the storm; kill it when an operation of ``target`` is in flight (or at a random
    moment when ``target`` is None or none comes); returns what was in flight at the kill."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.controller.storm",
        str(workdir),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.strip() == b"started", line
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (rng.uniform(0.05, 1.2) if target is None else 8.0)
        while True:
            markers.read()
            flight = markers.in_flight()
            if (target is not None and target in flight) or loop.time() > deadline:
                break
            await asyncio.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()
    return flight


@pytest.mark.slow
@pytest.mark.timeout(300 + 40 * MAX_ITERATIONS)
async def test_sigkill_inside_every_kind_of_operation(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CORRAL_CHAOS_SEED", "2026")))
    await _install_audit(tmp_path)
    markers = Markers(tmp_path / MARKERS)
    kills: Counter[str] = Counter()
    iterations = 0
    while iterations < MAX_ITERATIONS and min(kills[k] for k in KINDS) < KILLS_PER_KIND:
        iterations += 1
        wanted = min(KINDS, key=lambda k: (kills[k], rng.random()))
        target = None if iterations % 3 == 0 else wanted
        flight = await _storm_until_kill(tmp_path, markers, target, rng)
        kills.update(flight.keys())
        # orphaned commands finish (or hang) on their own; then nothing changes the world but us
        await _until(lambda: not _scripts_running(str(tmp_path / "vms")), 30, "orphaned scripts")
        await _check_at_kill(tmp_path, flight)
        await _check_after_restart(tmp_path)
        markers.read()
        markers.open.clear()  # everything of the killed incarnation has ended by now
    report = {"iterations": iterations, "kills_inside": dict(kills)}
    taken = _check_assignments(tmp_path)
    print(f"chaos: {json.dumps(report)}, assignment writes {taken}")
    short = {k: kills[k] for k in KINDS if kills[k] < KILLS_PER_KIND}
    assert not short, f"too few kills inside {short} after {iterations} kills ({report})"
    store = await open_store(f"sqlite:///{tmp_path / 'corral.db'}")
    try:
        attempts = (await store.pools.counters("chaos")).get("spawn_attempts", 0)
        tickets = await store.pools.list_tickets()
    finally:
        await store.close()
    assert attempts > iterations and len(tickets) > 2 * iterations  # the storm did real work
    assert taken > iterations


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
