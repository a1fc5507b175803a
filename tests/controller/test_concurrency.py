"""50 concurrent acquirers against one pool: every ticket gets its own VM, limits hold.

On SQLite in one process; on PostgreSQL from several processes sharing the database, where only
the store's atomic conditional assignment keeps two processes from handing out one VM.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from pathlib import Path

import pytest

from corral.pools.model import TicketState
from corral.store import open_store

from .acquirer import config
from .conftest import controller, fake_backend

ROOT = Path(__file__).resolve().parents[2]


async def test_fifty_acquirers_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    pool = {"max": 20, "max_starting": 20, "min_ready": 10, "max_per_owner": 2}
    async with controller(pool, store_url=url) as ctl:
        holding: Counter[str] = Counter()
        seen: dict[str, str] = {}
        peak = {"alive": 0}

        async def acquirer(i: int) -> None:
            owner = f"o{i % 10}"
            t = await ctl.create_ticket(owner=owner, pool="p")
            t = await ctl.wait_ticket(t.id, timeout=30)
            assert t.state is TicketState.ASSIGNED and t.vm is not None
            holding[owner] += 1
            assert holding[owner] <= 2, "max_per_owner exceeded"
            assert t.vm not in seen, f"{t.vm} handed to {seen.get(t.vm)} and {t.id}"
            seen[t.vm] = t.id
            c = (await ctl.get_pool("p")).vms
            alive = sum(n for s, n in c.items() if s not in ("terminated", "failed"))
            peak["alive"] = max(peak["alive"], alive)
            await asyncio.sleep(0.01)
            holding[owner] -= 1
            await ctl.close_ticket(t.id)

        await asyncio.gather(*(acquirer(i) for i in range(50)))
        assert len(seen) == 50  # no reuse configured: 50 distinct VMs
        assert peak["alive"] <= 20
        in_use = await ctl.list_vms(state="in_use")
        assert in_use == []


@pytest.mark.postgres
async def test_acquirers_in_several_processes_on_postgresql(pg_url: str) -> None:
    # migrate once, then a primary controller (preallocating) and 3 secondary processes
    store = await open_store(pg_url)
    await store.close()
    from corral.config import parse_config
    from corral.controller import Controller

    cfg = parse_config(config(pg_url), env={})
    fake = fake_backend()
    ctl = await Controller.create(cfg, backends={"p": fake}, tick=0.05)
    await ctl.start()
    try:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.controller.acquirer",
                pg_url,
                "17" if i < 2 else "16",
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for i in range(3)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), timeout=120
        )
        for proc, (_, err) in zip(procs, outputs, strict=True):
            assert proc.returncode == 0, err.decode()
        rows = [json.loads(line) for out, _ in outputs for line in out.decode().splitlines()]
        assert len(rows) == 50
        vms = [r["vm"] for r in rows]
        assert None not in vms
        assert len(set(vms)) == 50, "a VM was assigned to two tickets"
        # owners are shared by the processes: at no moment did one hold more than 3 VMs
        for owner in {r["owner"] for r in rows}:
            edges = sorted(
                (t, d)
                for r in rows
                if r["owner"] == owner
                for t, d in ((r["start"], 1), (r["end"], -1))
            )
            level = peak = 0
            for _, d in sorted(edges, key=lambda e: (e[0], e[1])):
                level += d
                peak = max(peak, level)
            assert peak <= 3, f"{owner} held {peak} VMs at once"
        alive = [v for v in await ctl.list_vms() if v.alive]
        assert len(alive) <= 60
        tickets = await ctl.list_tickets()
        assert len(tickets) == 50 and {t.state for t in tickets} == {TicketState.CLOSED}
    finally:
        await ctl.stop()
