"""Crash safety of the fake backend's state file: SIGKILL while spawning loses no created VM."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from corral.backends import load_backend
from corral.backends.fake import FakeBackend

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from corral.backends import load_backend
    from corral.backends.base import VMSpec

    async def main():
        fake = load_backend("fake", {"state_file": sys.argv[1]}, pool="p")
        start = int(sys.argv[2])
        async def one(i):
            await fake.spawn(VMSpec(f"vm-{i}", "p", i, {}))
            print(f"vm-{i}", flush=True)  # the spawn returned: the VM must be on record
        for batch in range(start, start + 100_000, 20):
            await asyncio.gather(*(one(i) for i in range(batch, batch + 20)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
async def test_sigkill_during_spawns_keeps_every_returned_vm(tmp_path: Path) -> None:
    state = tmp_path / "fake.json"
    rng = random.Random(11)
    confirmed: set[str] = set()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for round_number in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(state), str(round_number * 1_000_000)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert proc.stdout is not None
        wanted = rng.randint(1, 200)
        for _ in range(wanted):
            line = proc.stdout.readline()
            assert line, "the child died before being killed"
            confirmed.add(line.strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        confirmed.update(line.strip() for line in proc.stdout if line.strip())
        proc.stdout.close()
        backend = load_backend("fake", {"state_file": str(state)}, pool="p")
        assert isinstance(backend, FakeBackend)
        names = await backend.names()  # parses: the file is never half-written
        assert confirmed <= names, sorted(confirmed - names)[:5]
        await backend.aclose()


SCRIPT_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from corral.backends import load_backend
    from corral.backends.base import VMSpec

    async def main():
        new = ["sh", "-c", 'sleep 3; touch "$0/$CORRAL_VM_NAME"; echo 127.0.0.1', sys.argv[1]]
        script = load_backend("script", {"new": new, "delete": ["true"]}, pool="p")
        script.mark(sys.argv[2])
        spawns = [script.spawn(VMSpec(f"vm-{i}", "p", i, {})) for i in range(4)]
        print("spawning", flush=True)
        await asyncio.gather(*spawns)

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_sigkill_during_script_spawns_leaves_commands_the_next_owner_kills(
    tmp_path: Path,
) -> None:
    # the backend half of issue 8 item 5: a killed daemon's `new` commands live on in their own
    # process groups; carrying the store's marker, they are all found and killed, so none
    # creates its VM after the restart rolled the spawns back
    from corral.backends import leftovers

    marker = f"crash-test-{os.getpid()}"
    vms = tmp_path / "vms"
    vms.mkdir()
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT_CHILD, str(vms), marker],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "spawning"
    deadline = time.monotonic() + 30
    while len(leftovers.find(marker)) < 4:  # the four `new` commands (and their sleeps)
        assert time.monotonic() < deadline, "the commands never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    orphans = leftovers.find(marker)
    assert orphans, "the commands must outlive their daemon for this test to mean anything"
    killed = leftovers.kill_now(marker, deadline=20)
    assert set(orphans) <= set(killed) and leftovers.find(marker) == []
    assert list(vms.iterdir()) == []  # and with every command dead, nothing can appear now
