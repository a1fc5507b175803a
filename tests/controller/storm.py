"""The controller under a storm of tickets, for the chaos test (run as a child process, killed).

Usage: ``python -m tests.controller.storm WORKDIR``: runs a controller on ``WORKDIR/corral.db``
with the script backend keeping its VMs as files in ``WORKDIR/vms``, a second, secondary controller
sharing its store (so that two assigners race for the same VMs, as two hosts would), and 8 clients
that acquire, hold briefly and close tickets (some give up waiting, some never close theirs: their
lease expires). Prints ``started`` once the controllers run, then loops until killed. With
``CORRAL_CHAOS_SLOTS=N`` (N > 1) the pool's VMs serve N tickets at once and the clients also ask
for exclusive and two-machine tickets (issue 15).

Every backend command runs under ``scripts/marked.sh`` and every store assignment under
:func:`mark_assignments`: both append ``start KIND ID PID VM`` / ``end KIND ID PID ...`` lines to
``WORKDIR/markers.log`` (KIND is ``spawn``, ``terminate``, ``release`` or
``assign``), from which the chaos test knows what was in flight at each kill. Each assignment's
write is delayed by ``CORRAL_CHAOS_ASSIGN_DELAY`` seconds (default 0.02) before and after it, as a
slow database would, so that a kill can land between an assignment's decision and its commit, or
between the commit and the controller hearing of it.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from corral import exceptions
from corral.config import CorralConfig, parse_config
from corral.controller import Controller
from corral.store import Store

EXAMPLES = Path(__file__).resolve().parents[2] / "corral" / "backends" / "examples"
MARKED = Path(__file__).resolve().parent / "scripts" / "marked.sh"
MARKERS = "markers.log"
"""The marker log's name in the work directory."""


SLOTS_ENV = "CORRAL_CHAOS_SLOTS"
"""How many tickets one VM of the chaos pool serves (default 1)."""


def config(workdir: Path, slots: int = 1) -> CorralConfig:
    """The chaos pool: small limits so that spawns, reuse, expiry and terminations interleave."""
    vms = str(workdir / "vms")
    log = str(workdir / MARKERS)

    def marked(kind: str, script: str, *args: str) -> list[str]:
        return ["sh", str(MARKED), log, kind, "sh", str(EXAMPLES / script), vms, *args]

    return parse_config(
        {
            "store": f"sqlite:///{workdir / 'corral.db'}",
            "pools": {
                "chaos": {
                    "backend": {
                        "type": "script",
                        "new": marked("spawn", "new.sh", "0.05"),
                        "delete": marked("terminate", "delete.sh"),
                        "list": ["sh", str(EXAMPLES / "list.sh"), vms],
                        "livecheck": ["sh", str(EXAMPLES / "livecheck.sh"), vms],
                        "release": marked("release", "release.sh"),
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
                    "slots": slots,
                    "reserve_after": 0.5,
                }
            },
        },
        env={},
    )


def mark_assignments(store: Store, log: Path, delay: float) -> None:
    """Log every call of ``store.pools.assign`` and ``assign_many`` (start, end) and slow it by
    ``delay`` each side."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pid = os.getpid()
    ids = itertools.count()

    def marked(real: Callable[..., Awaitable[Any]], first: Callable[[Any], str]) -> Any:
        async def assign(*args: Any, **kwargs: Any) -> Any:
            op = f"a{pid}-{next(ids)}"
            vm = first(args[1] if len(args) > 1 else kwargs.get("vm_name", kwargs.get("vms")))
            os.write(fd, f"start assign {op} {pid} {vm}\n".encode())
            await asyncio.sleep(delay)
            ok = await real(*args, **kwargs)
            await asyncio.sleep(delay)
            os.write(fd, f"end assign {op} {pid} {int(bool(ok))}\n".encode())
            return ok

        return assign

    store.pools.assign = marked(store.pools.assign, str)  # type: ignore[method-assign]
    store.pools.assign_many = marked(  # type: ignore[method-assign]
        store.pools.assign_many, lambda vms: str(next(iter(vms))[0])
    )


async def client(ctl: Controller, n: int, slots: int = 1) -> None:
    """Acquire, hold, close; now and then give up waiting or forget to close (lease expiry).
    With shared VMs (``slots`` > 1), some tickets are exclusive and some want two VMs."""
    rng = random.Random(n)
    while True:
        # shared VMs: fewer sandboxes and longer holds, so that tickets join VMs (and the two
        # assigners race for the same joins) often
        sandbox = rng.choice([None, "s1", "s2"] if slots == 1 else [None, None, "s1"])
        shape: dict[str, Any] = {}
        if slots > 1:
            shape = {"exclusive": rng.random() < 0.25, "count": 2 if rng.random() < 0.2 else 1}
        ticket = await ctl.create_ticket(owner=f"o{n % 4}", pool="chaos", sandbox=sandbox, **shape)
        try:
            # a short wait now and then: the ticket is cancelled while an assigner may be
            # writing it
            ticket = await ctl.wait_ticket(ticket.id, timeout=rng.choice([0.05, 3.0, 3.0]))
        except exceptions.TicketTimeout:
            await ctl.close_ticket(ticket.id)
            continue
        await asyncio.sleep(rng.uniform(0, 0.05) if slots == 1 else rng.uniform(0.05, 0.4))
        if rng.random() < 0.9:
            await ctl.close_ticket(ticket.id)


async def main(workdir: Path) -> None:
    """Run the controllers and the storm until killed."""
    slots = int(os.environ.get(SLOTS_ENV, "1"))
    cfg = config(workdir, slots)
    ctl = await Controller.create(cfg, tick=0.1)
    mark_assignments(
        ctl.store,
        workdir / MARKERS,
        float(os.environ.get("CORRAL_CHAOS_ASSIGN_DELAY", "0.02")),
    )
    # a second assigner on the same store, as a second host on a shared database would be
    second = await Controller.create(cfg, store=ctl.store, tick=0.05, recover=False)
    await ctl.start()
    await second.start()
    print("started", flush=True)
    await asyncio.gather(*(client(ctl if n % 2 else second, n, slots) for n in range(8)))


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
