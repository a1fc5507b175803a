"""kill -9 while a slow ``new`` runs, then a restart: no leaked VM, without any sweep (issue 8
item 5).

The child controller spawns VMs whose ``new`` creates the machine only after 4 s (as a cloud
does). It is killed while some ``new`` runs; a controller restarted at once on the same store
recovers: the interrupted spawns are rolled back (``delete``). The pool has no ``list`` command,
so no reconciliation or periodic sweep can remove a machine that appears afterwards: the only
thing that keeps the count of leaked VMs at 0 is that the restart kills the orphaned ``new``
commands before it undoes their work (``corral.backends.leftovers``).

Breakage caught: ``recovery.take_over`` not killing the leftovers (or the script backend not
marking its commands): the orphaned ``new`` creates its file after the ``delete``, and the files
outnumber the VMs the store holds alive.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sys
from pathlib import Path

import pytest

from corral.config import CorralConfig, parse_config
from corral.controller import Controller

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"
EXAMPLES = ROOT / "corral" / "backends" / "examples"
BOOT_SECONDS = 4.0
"""How long ``new`` runs before its machine exists: longer than a restart takes."""

CHILD = """
import asyncio, sys
from pathlib import Path
from corral.controller import Controller
from tests.controller.test_restart_leftovers import config

async def main() -> None:
    ctl = await Controller.create(config(Path(sys.argv[1])), tick=0.1)
    await ctl.start()
    print("started", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def config(workdir: Path) -> CorralConfig:
    """A pool on the script backend with a slow ``new`` and no ``list`` (so no sweep at all)."""
    vms = str(workdir / "vms")
    return parse_config(
        {
            "store": f"sqlite:///{workdir / 'corral.db'}",
            "pools": {
                "slow": {
                    "backend": {
                        "type": "script",
                        "new": ["sh", str(SCRIPTS / "late_new.sh"), vms, f"{BOOT_SECONDS:g}"],
                        "delete": ["sh", str(EXAMPLES / "delete.sh"), vms],
                    },
                    "max": 4,
                    "max_starting": 4,
                    "min_ready": 3,
                    "spawn_timeout": 30,
                    "terminate_timeout": 10,
                    "poll_interval": 0.02,
                }
            },
        },
        env={},
    )


def _news_running(vms: Path) -> int:
    """How many ``late_new.sh`` of this test run right now (they outlive a killed controller)."""
    running = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"late_new.sh" in cmdline and str(vms).encode() in cmdline:
            running += 1
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


async def _kill_during_spawns(workdir: Path, rng: random.Random) -> int:
    """Start the child, SIGKILL it while ``new`` commands run; how many ran at the kill."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(workdir),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout=60)
        assert line.strip() == b"started", line
        await _until(lambda: _news_running(workdir / "vms") > 0, 30, "a spawn to start")
        await asyncio.sleep(rng.uniform(0.0, 1.0))
        in_flight = _news_running(workdir / "vms")
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    return in_flight


async def _restart_and_find_leaks(workdir: Path) -> set[str]:
    """Restart (recover, no traffic, no sweep), let every orphan finish; the leaked machines."""
    vms = workdir / "vms"
    ctl = await Controller.create(config(workdir), tick=0.1)
    try:

        async def quiet() -> bool:
            if not ctl.idle():
                return False
            return not await ctl.find_vms(states=["spawning", "releasing", "terminating"])

        await _until(quiet, 60, "the restarted controller to settle")
    finally:
        await ctl.stop()
    # without the fix the orphaned `new` commands run on and create their machines now
    await _until(lambda: _news_running(vms) == 0, 30, "orphaned new commands to end")
    ctl = await Controller.create(config(workdir), tick=0.1)
    try:
        alive = {v.name for v in await ctl.list_vms() if v.alive}
    finally:
        await ctl.stop()
    files = {p.name for p in vms.iterdir()} if vms.exists() else set()
    assert alive <= files, f"the store holds VMs alive that do not exist: {alive - files}"
    return files - alive


@pytest.mark.slow
@pytest.mark.timeout(600)
async def test_kill9_during_slow_spawns_leaks_nothing_without_a_sweep(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("CORRAL_CHAOS_SEED", "2026")))
    in_flight = 0
    leaked: set[str] = set()
    for _ in range(4):
        in_flight += await _kill_during_spawns(tmp_path, rng)
        leaked |= await _restart_and_find_leaks(tmp_path)
    assert in_flight >= 4, "the kills must land while new commands run"
    assert not leaked, f"{len(leaked)} VMs leaked (no store row holds them alive): {leaked}"
