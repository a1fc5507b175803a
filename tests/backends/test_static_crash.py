"""kill -9 of a controller serving a static pool in the middle of cleanups (issue 15).

A child process runs a controller on a SQLite store with a static pool of three loopback
machines whose ``cleanup`` takes a while (and a ``max`` above three, so that reservations wait
in line for a machine), and four clients that acquire and release in a loop
(half of them in a sandbox, so cleanups run both on the release path and on termination). The
test kills the child with SIGKILL while a cleanup runs, restarts a controller on the same store
and state file, closes every ticket the dead clients left, and checks once it is quiet:

- nothing lost: the backend's reservations are exactly the VMs the store holds alive, every
  machine is still in the inventory and none went to maintenance (a killed cleanup is run again,
  it does not fail);
- over the whole run, from the store: no ticket failed (no VM was found lost), no two tickets
  ever held one address at overlapping times, and no cleanup of a machine ran while a ticket
  held it.

Breakage caught: ``end`` run before the cleanup in ``terminate`` (the machine is handed out
while being cleaned: a cleanup overlaps a ticket's hold); reservations kept in memory only
(after the restart reconciliation finds the VMs alive in the store missing from the backend and
fails their tickets).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from corral.config import CorralConfig, parse_config
from corral.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
MACHINES = 3

CLEANUP = """\
echo "begin $CORRAL_MACHINE $CORRAL_VM_NAME $(date +%s.%N)" >> "$1/cleanups"
sleep 0.4
echo "end $CORRAL_MACHINE $CORRAL_VM_NAME $(date +%s.%N)" >> "$1/cleanups"
"""

CHILD = """
import asyncio, random, sys
from pathlib import Path
from corral import exceptions
from corral.controller import Controller
from tests.backends.test_static_crash import config

async def client(ctl: Controller, i: int) -> None:
    rng = random.Random(i)
    while True:
        sandbox = "s" if i % 2 else None
        try:
            t = await ctl.create_ticket(owner=f"w{i}", pool="p", sandbox=sandbox)
            t = await ctl.wait_ticket(t.id, timeout=60)
            await asyncio.sleep(rng.uniform(0.0, 0.2))
            await ctl.close_ticket(t.id)
        except exceptions.CorralError:
            await asyncio.sleep(0.1)

async def main() -> None:
    ctl = await Controller.create(config(Path(sys.argv[1])), tick=0.1)
    await ctl.start()
    print("started", flush=True)
    await asyncio.gather(*(client(ctl, i) for i in range(4)))

asyncio.run(main())
"""


def config(workdir: Path) -> CorralConfig:
    """A static pool of loopback machines with a slow cleanup, on a SQLite store."""
    (workdir / "cleanup.sh").write_text(CLEANUP)
    lines = [f"- {{name: m{n}, address: 127.0.0.{n}}}" for n in range(1, MACHINES + 1)]
    (workdir / "machines.yaml").write_text("\n".join(lines) + "\n")
    return parse_config(
        {
            "store": f"sqlite:///{workdir / 'corral.db'}",
            "pools": {
                "p": {
                    "backend": {
                        "type": "static",
                        "inventory": "machines.yaml",
                        "cleanup": ["sh", str(workdir / "cleanup.sh"), str(workdir)],
                        "state_file": "static-p.json",
                    },
                    "min_ready": 0,
                    "max": MACHINES + 2,  # reservations beyond the machines wait in line
                    "max_starting": MACHINES + 2,
                    "reuse": {"sandbox": True},
                    "spawn_timeout": 60,
                    "terminate_timeout": 30,
                    "poll_interval": 0.02,
                }
            },
        },
        env={},
        base_dir=workdir,
    )


def _cleanups_running(workdir: Path) -> int:
    running = 0
    needle = str(workdir / "cleanup.sh").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                running += 1
        except OSError:
            continue
    return running


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


async def _kill_during_cleanup(workdir: Path, rng: random.Random) -> bool:
    """Run the child and SIGKILL it while a cleanup runs; whether one ran at the kill."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
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
        await _until(lambda: _cleanups_running(workdir) > 0, 60, "a cleanup to start")
        await asyncio.sleep(rng.uniform(0.0, 0.3))
        landed = _cleanups_running(workdir) > 0
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return landed


async def _restart_and_check(workdir: Path) -> None:
    """Restart, close what the dead clients left, and check nothing was lost once quiet."""
    ctl = await Controller.create(config(workdir), tick=0.1)
    try:
        await ctl.start()

        async def quiet() -> bool:
            open_tickets = [t for t in await ctl.list_tickets() if t.open]
            for ticket in open_tickets:
                await ctl.close_ticket(ticket.id)
            if open_tickets or not ctl.idle():
                return False
            return not await ctl.find_vms(states=["spawning", "releasing", "terminating"])

        await _until(quiet, 120, "the restarted controller to settle")
        backend = ctl.backend("p").backend
        alive = {v.name for v in await ctl.list_vms() if v.alive}
        reserved = {h.name for h in await backend.list()}
        assert reserved == alive, f"reservations {reserved} but VMs alive {alive}"
        inventory = await backend.inventory()  # type: ignore[attr-defined]
        assert sorted(s.name for s in inventory) == [f"m{n}" for n in range(1, MACHINES + 1)]
        held = [s for s in inventory if s.state.value == "maintenance"]
        assert not held, f"machines lost to maintenance: {held}"
    finally:
        await ctl.stop()


async def _check_history(workdir: Path) -> None:
    """From the store: no address in two tickets at once; no cleanup inside a ticket's hold."""
    ctl = await Controller.create(config(workdir), tick=0.1)
    try:
        vms = {v.name: v for v in await ctl.list_vms()}
        held: dict[str, list[tuple[float, float]]] = {}
        tickets = await ctl.list_tickets()
        failed = [t.id for t in tickets if t.state.value == "failed"]
        assert not failed, f"tickets failed (their VMs were lost): {failed}"
        for ticket in tickets:
            if ticket.vm is None or ticket.assigned_at is None:
                continue
            assert ticket.closed_at is not None, f"ticket {ticket.id} still open"
            address = vms[ticket.vm].address
            assert address is not None
            held.setdefault(address, []).append((ticket.assigned_at, ticket.closed_at))
    finally:
        await ctl.stop()
    assert held, "no ticket was ever served"
    for address, spans in held.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"{address} held by two tickets at once around {start}"
    for machine, begin, end in _cleanups(workdir):
        for start, stop in held.get(f"127.0.0.{machine[1:]}", []):
            assert end <= start or begin >= stop, f"{machine} cleaned while a ticket held it"


def _cleanups(workdir: Path) -> list[tuple[str, float, float]]:
    """Every cleanup run: (machine, began, ended); a killed one ended as it began."""
    runs: list[tuple[str, float, float]] = []
    started: dict[tuple[str, str], float] = {}
    for line in (workdir / "cleanups").read_text().splitlines():
        kind, machine, vm, when = line.split()
        if kind == "begin":
            if (machine, vm) in started:  # the earlier run was killed
                runs.append((machine, started[machine, vm], started[machine, vm]))
            started[machine, vm] = float(when)
        elif (machine, vm) in started:
            runs.append((machine, started.pop((machine, vm)), float(when)))
    runs.extend((machine, when, when) for (machine, _), when in started.items())
    return runs


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill9_in_the_middle_of_cleanups_loses_no_machine(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CORRAL_CHAOS_SEED", "2026")))
    landed = 0
    for _ in range(4):
        landed += await _kill_during_cleanup(tmp_path, rng)
        await _restart_and_check(tmp_path)
    assert landed >= 3, "the kills must land while cleanups run"
    await _check_history(tmp_path)
