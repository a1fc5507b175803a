"""Crash safety of the fake backend's state file: SIGKILL while spawning loses no created VM."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
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
