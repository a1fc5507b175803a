"""A secondary controller process for the PostgreSQL concurrency test.

Usage: ``python -m tests.controller.acquirer URL N``: opens a secondary controller (no recovery,
no preallocation) on the database at URL and runs N acquirers at once (owners ``o0``..``o4``,
shared with the other processes); each waits for its VM, holds it 20 ms and closes the ticket.
Prints one JSON line per ticket: ``{"ticket", "owner", "vm", "start", "end"}`` where start/end
bound (from inside) the time the ticket held its VM.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from corral.backends import validate_options
from corral.backends.fake import FakeBackend
from corral.config import parse_config
from corral.controller import Controller


def config(url: str) -> dict[str, object]:
    """The configuration the test and its child processes share."""
    return {
        "store": url,
        "pools": {
            "p": {
                "backend": {"type": "fake"},
                "max": 60,
                "max_starting": 20,
                "min_ready": 10,
                "max_per_owner": 3,
                "poll_interval": 0.01,
                "reuse": {"sandbox": False},
            }
        },
    }


async def acquire(ctl: Controller, owner: str) -> dict[str, object]:
    """One acquirer: ticket, wait, hold briefly, close."""
    ticket = await ctl.create_ticket(owner=owner, pool="p")
    ticket = await ctl.wait_ticket(ticket.id, timeout=60)
    start = time.time()
    await asyncio.sleep(0.02)
    end = time.time()
    await ctl.close_ticket(ticket.id)
    return {"ticket": ticket.id, "owner": owner, "vm": ticket.vm, "start": start, "end": end}


async def main(url: str, n: int) -> None:
    """Run ``n`` acquirers through a secondary controller and print what each got."""
    cfg = parse_config(config(url), env={})
    fake = FakeBackend(validate_options("fake", {}), pool="p")
    ctl = await Controller.create(cfg, backends={"p": fake}, recover=False, tick=0.05)
    await ctl.start()
    try:
        done = await asyncio.gather(*(acquire(ctl, f"o{i % 5}") for i in range(n)))
        for row in done:
            print(json.dumps(row), flush=True)
    finally:
        await ctl.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
