"""The controller under a storm of tickets, for the chaos test (run as a child process, killed).

Usage: ``python -m tests.controller.storm WORKDIR``: runs a controller on ``WORKDIR/corral.db``
with the script backend keeping its VMs as files in ``WORKDIR/vms``, and 8 clients that acquire,
hold briefly and close tickets (some never close theirs: their lease expires). Prints ``started``
once the controller runs, then loops until killed.
"""

from __future__ import annotations

import asyncio
import random
import sys
from pathlib import Path

from corral import exceptions
from corral.config import CorralConfig, parse_config
from corral.controller import Controller

EXAMPLES = Path(__file__).resolve().parents[2] / "corral" / "backends" / "examples"


def config(workdir: Path) -> CorralConfig:
    """The chaos pool: small limits so that spawns, reuse, expiry and terminations interleave."""
    vms = str(workdir / "vms")
    return parse_config(
        {
            "store": f"sqlite:///{workdir / 'corral.db'}",
            "pools": {
                "chaos": {
                    "backend": {
                        "type": "script",
                        "new": ["sh", str(EXAMPLES / "new.sh"), vms, "0.05"],
                        "delete": ["sh", str(EXAMPLES / "delete.sh"), vms],
                        "list": ["sh", str(EXAMPLES / "list.sh"), vms],
                        "livecheck": ["sh", str(EXAMPLES / "livecheck.sh"), vms],
                        "release": ["sh", str(EXAMPLES / "release.sh"), vms],
                    },
                    "max": 8,
                    "max_starting": 4,
                    "min_ready": 3,
                    "max_per_owner": 3,
                    "reuse": {"sandbox": True, "max_uses": 3},
                    "livecheck": {"period": 0.5, "attempts": 2},
                    "ticket_ttl": 1.0,
                    "spawn_timeout": 10,
                    "terminate_timeout": 10,
                    "poll_interval": 0.02,
                }
            },
        },
        env={},
    )


async def client(ctl: Controller, n: int) -> None:
    """Acquire, hold, close; now and then forget to close (the lease must reclaim the VM)."""
    rng = random.Random(n)
    while True:
        sandbox = rng.choice([None, "s1", "s2"])
        ticket = await ctl.create_ticket(owner=f"o{n % 4}", pool="chaos", sandbox=sandbox)
        try:
            ticket = await ctl.wait_ticket(ticket.id, timeout=3)
        except exceptions.TicketTimeout:
            await ctl.close_ticket(ticket.id)
            continue
        await asyncio.sleep(rng.uniform(0, 0.05))
        if rng.random() < 0.9:
            await ctl.close_ticket(ticket.id)


async def main(workdir: Path) -> None:
    """Run the controller and the storm until killed."""
    ctl = await Controller.create(config(workdir), tick=0.1)
    await ctl.start()
    print("started", flush=True)
    await asyncio.gather(*(client(ctl, n) for n in range(8)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
