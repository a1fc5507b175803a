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

The same storm runs on shared VMs (``slots: 2``, issue 15) with exclusive and two-machine
tickets (``test_kills_with_shared_vms_and_multi_machine_tickets``): a VM is then taken free or
joined with room (never past ``slots``, never an exclusive ticket's VM, never joined by an
exclusive ticket), a ticket never holds more VMs than it asked for, and after each restart every
VM's ticket list matches the assigned tickets, at most ``slots`` of them, an exclusive one alone.
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

from .storm import MARKERS, SLOTS_ENV
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
    old_state TEXT, old_other TEXT,
    old_load INTEGER, old_exclusive INTEGER, new_exclusive INTEGER,
    old_tickets TEXT, new_tickets TEXT
);
CREATE TRIGGER IF NOT EXISTS chaos_vm_taken AFTER UPDATE ON vms
WHEN NEW.uses <> OLD.uses
BEGIN
    INSERT INTO chaos_assignments (side, vm, ticket, old_state, old_other,
        old_load, old_exclusive, new_exclusive, old_tickets, new_tickets)
    VALUES ('vm', NEW.name, NEW.ticket, OLD.state, OLD.ticket,
        OLD.load, OLD.exclusive, NEW.exclusive, OLD.tickets, NEW.tickets);
END;
CREATE TRIGGER IF NOT EXISTS chaos_ticket_taken AFTER UPDATE ON tickets
WHEN NEW.vm IS NOT NULL AND NEW.assigned_at IS NOT OLD.assigned_at
BEGIN
    INSERT INTO chaos_assignments (side, vm, ticket, old_state, old_other)
    VALUES ('ticket', NEW.vm, NEW.id, OLD.state, OLD.vm);
END;
"""
"""Every assignment write, logged by SQLite inside the transaction that makes it (so exactly the
committed ones, whatever the kills): the VM side is the write that counts a use (a take, or a
join of a shared VM: the joining ticket is the one its ticket list gained)."""


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


def _check_assignments(workdir: Path, slots: int = 1) -> int:
    """No VM taken unless ready and free (or, shared, joined with room and by a ticket that is
    not exclusive, nobody holding it exclusively), no ticket taken unless waiting, no ticket
    given more VMs than it asked for: over every assignment write ever committed. Returns how
    many VM-side writes there were."""
    with sqlite3.connect(workdir / "corral.db") as conn:
        rows = conn.execute(
            "SELECT side, vm, ticket, old_state, old_other, old_load, old_exclusive,"
            " new_exclusive, old_tickets, new_tickets FROM chaos_assignments ORDER BY seq"
        ).fetchall()
        asked = dict(conn.execute("SELECT id, machines FROM tickets").fetchall())
    conn.close()
    vms_of: dict[str, set[str]] = {}
    taken = 0
    for side, vm, ticket, old_state, old_other, load, was_excl, now_excl, before, after in rows:
        if side != "vm":
            assert old_state == TicketState.WAITING.value, (
                f"ticket {ticket} given VM {vm} while {old_state} (VM {old_other})"
            )
            continue
        taken += 1
        if not load:
            assert old_state == VMState.READY.value and old_other is None, (
                f"VM {vm} given to ticket {ticket} while {old_state} for ticket {old_other}"
            )
            joiner = ticket
        else:
            (joiner,) = set((after or "").split()) - set((before or "").split())
            assert old_state == VMState.IN_USE.value and load < slots, (
                f"VM {vm} joined by {joiner} while {old_state} with {load} tickets ({slots} slots)"
            )
            assert not was_excl and not now_excl, (
                f"VM {vm} shared between {before} and {joiner} with an exclusive ticket"
            )
        vms_of.setdefault(joiner, set()).add(vm)
    over = {t: sorted(v) for t, v in vms_of.items() if len(v) > asked.get(t, 1)}
    assert not over, f"tickets given more VMs than they asked for: {over}"
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


async def _check_after_restart(workdir: Path, slots: int = 1) -> dict[str, int]:
    """Restart (recover + reconcile) without traffic, wait until quiet, check the invariants."""
    vms_dir = workdir / "vms"
    ctl = await Controller.create(storm_config(workdir, slots), tick=0.1)
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
        holders: Counter[str] = Counter()
        for t in assigned.values():
            assert t.vm is not None and len(set(t.vms)) == t.count, t
            holders.update(t.vms)
            for name in t.vms:
                vm = alive[name]
                assert vm.state is VMState.IN_USE and t.id in vm.tickets, (vm, t)
                if t.exclusive:
                    assert vm.tickets == (t.id,), f"exclusive {t.id} shares {name}: {vm.tickets}"
        for vm in alive.values():
            assert vm.load == len(vm.tickets) == holders[vm.name] <= slots, vm
            if vm.state is VMState.IN_USE:
                assert vm.ticket in assigned, f"VM {vm.name} in use for {vm.ticket}"
                assert all(t in assigned for t in vm.tickets), f"VM {vm.name}: {vm.tickets}"
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


def _slow_joins(slots: int) -> dict[str, str]:
    """On shared VMs, a wider window between an assignment's decision and its write (unless
    ``CORRAL_CHAOS_ASSIGN_DELAY`` is set): the two assigners then often decide the same join
    from the same load, which only the store's conditional write keeps within ``slots``."""
    if slots == 1 or "CORRAL_CHAOS_ASSIGN_DELAY" in os.environ:
        return {}
    return {"CORRAL_CHAOS_ASSIGN_DELAY": "0.1"}


def _check_live(workdir: Path, slots: int) -> int:
    """One consistent read of the store while the storm runs (a read transaction of SQLite's
    WAL): every VM holds ``load`` == its listed tickets <= ``slots``, an exclusive ticket alone;
    every assigned ticket holds as many VMs as it asked for and each lists it; every ticket an
    in-use VM lists is assigned. Returns how many assigned tickets it saw."""
    conn = sqlite3.connect(f"file:{workdir / 'corral.db'}?mode=ro", uri=True, timeout=10)
    try:
        conn.execute("BEGIN")
        vms = {
            name: (state, load, bool(exclusive), (listed or "").split())
            for name, state, load, exclusive, listed in conn.execute(
                "SELECT name, state, load, exclusive, tickets FROM vms"
            )
        }
        assigned = conn.execute(
            "SELECT id, vm, vms, exclusive, machines FROM tickets WHERE state = 'assigned'"
        ).fetchall()
        conn.execute("COMMIT")
    finally:
        conn.close()
    open_ids = {row[0] for row in assigned}
    for name, (state, load, exclusive, listed) in vms.items():
        assert load == len(listed) <= slots, f"VM {name} ({state}): load {load}, {listed}"
        assert not exclusive or load <= 1, f"exclusive VM {name} shared: {listed}"
        if state == VMState.IN_USE.value:
            gone = [t for t in listed if t not in open_ids]
            assert not gone, f"VM {name} in use for tickets no longer assigned: {gone}"
    for tid, first, names, exclusive, machines in assigned:
        held = json.loads(names) if names else [first]
        assert len(set(held)) == machines, f"ticket {tid} asked for {machines}, holds {held}"
        for name in held:
            listed = vms[name][3]
            assert tid in listed, f"ticket {tid} holds {name}, which lists {listed}"
            assert not exclusive or listed == [tid], f"exclusive {tid} shares {name}: {listed}"
    return len(assigned)


SHARED_WARMUP = 1.0
"""Seconds the storm runs on shared VMs before a kill may land."""

LIVE_CHECKS: Counter[str] = Counter()
"""How many live reads :func:`_check_live` made, and how many assigned tickets they saw."""


async def _storm_until_kill(
    workdir: Path, markers: Markers, target: str | None, rng: random.Random, slots: int = 1
) -> dict[str, set[str]]:
    """Start the storm; kill it when an operation of ``target`` is in flight (or at a random
    moment when ``target`` is None or none comes); returns what was in flight at the kill.
    On shared VMs the storm runs at least ``SHARED_WARMUP`` seconds first (so that tickets come
    to share VMs), its store checked live every 50 ms."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.controller.storm",
        str(workdir),
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), SLOTS_ENV: str(slots), **_slow_joins(slots)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.strip() == b"started", line
        loop = asyncio.get_running_loop()
        shared = slots > 1
        start = loop.time()
        deadline = start + (rng.uniform(0.05, 1.2) if target is None else 8.0)
        deadline += SHARED_WARMUP if shared else 0.0
        checked = start
        while True:
            markers.read()
            flight = markers.in_flight()
            ripe = not shared or loop.time() > start + SHARED_WARMUP
            if (ripe and target is not None and target in flight) or loop.time() > deadline:
                break
            if shared and loop.time() - checked > 0.05:
                LIVE_CHECKS["tickets"] += _check_live(workdir, slots)
                LIVE_CHECKS["reads"] += 1
                checked = loop.time()
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
    await _chaos(tmp_path, slots=1)


@pytest.mark.slow
@pytest.mark.timeout(300 + 40 * MAX_ITERATIONS)
async def test_kills_with_shared_vms_and_multi_machine_tickets(tmp_path: Path) -> None:
    """The same kills on a pool of 2-slot VMs with exclusive and two-machine tickets (issue 15).
    Catches: a join written past ``slots`` or onto an exclusive ticket's VM, a multi-machine
    ticket holding part of its VMs after a crash, a VM's ticket list out of step with the
    tickets after recovery."""
    await _chaos(tmp_path, slots=2)


async def _chaos(tmp_path: Path, slots: int) -> None:
    rng = random.Random(int(os.environ.get("CORRAL_CHAOS_SEED", "2026")))
    await _install_audit(tmp_path)
    markers = Markers(tmp_path / MARKERS)
    kills: Counter[str] = Counter()
    iterations = 0
    while iterations < MAX_ITERATIONS and min(kills[k] for k in KINDS) < KILLS_PER_KIND:
        iterations += 1
        wanted = min(KINDS, key=lambda k: (kills[k], rng.random()))
        target = None if iterations % 3 == 0 else wanted
        flight = await _storm_until_kill(tmp_path, markers, target, rng, slots)
        kills.update(flight.keys())
        # orphaned commands finish (or hang) on their own; then nothing changes the world but us
        # (the work directory, not only its vms/: a child the storm forked just before the kill
        # still runs the storm's command line, naming the work directory, until it execs, and
        # holds the store's lock meanwhile: a restart then met StoreInUse once, under load 14)
        await _until(lambda: not _scripts_running(str(tmp_path)), 30, "orphaned scripts")
        await _check_at_kill(tmp_path, flight)
        await _check_after_restart(tmp_path, slots)
        markers.read()
        markers.open.clear()  # everything of the killed incarnation has ended by now
    report = {"iterations": iterations, "kills_inside": dict(kills)}
    taken = _check_assignments(tmp_path, slots)
    with sqlite3.connect(tmp_path / "corral.db") as conn:
        joins = conn.execute(
            "SELECT count(*) FROM chaos_assignments WHERE side = 'vm' AND old_load > 0"
        ).fetchone()[0]
        multi = conn.execute(
            "SELECT count(*) FROM tickets WHERE machines > 1 AND assigned_at IS NOT NULL"
        ).fetchone()[0]
    conn.close()
    print(
        f"chaos: {json.dumps(report)}, assignment writes {taken} (joins {joins}), "
        f"multi-machine tickets served {multi}, live checks {dict(LIVE_CHECKS)}"
    )
    if slots > 1:
        assert joins > 0 and multi > 0, "the storm shared no VM or served no multi-machine ticket"
        assert LIVE_CHECKS["tickets"] > 0, "the live checks never saw an assigned ticket"
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
