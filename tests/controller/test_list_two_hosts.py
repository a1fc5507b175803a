"""A list ticket (issue 15) on two hosts sharing one PostgreSQL database: created on the host
that spawns nothing, its entries span two pools, and it is assigned whole (all three VMs, in
entry order) by whichever host runs the round, never half.

Breakage caught (by hand): the stored entries not read back into the model
(``records.ticket`` dropping ``requests``): the ticket then looks like three machines of one pool
and is never served. Cluster mode proper (each pool led by one host) is not set up here; the
point is that assignment is not leader-gated, so no host needs to lead both pools.
"""

from __future__ import annotations

from typing import Any

import pytest

from corral.config import parse_config
from corral.controller import Controller
from corral.pools.model import Request, TicketState

from .conftest import fake_backend

pytestmark = pytest.mark.postgres

DEADLINE = 30.0


def _pool(min_ready: int) -> dict[str, Any]:
    return {
        "backend": {"type": "fake"},
        "max": 3,
        "min_ready": min_ready,
        "poll_interval": 0.01,
        "spawn_timeout": 5,
        "terminate_timeout": 5,
    }


async def test_a_list_ticket_spanning_two_pools_is_assigned_whole_across_hosts(
    pg_url: str,
) -> None:
    cfg = parse_config(
        {"store": pg_url, "pools": {"p": _pool(2), "q": {**_pool(1), "tags": ["s390x"]}}},
        env={},
    )
    backends = {"p": fake_backend("p"), "q": fake_backend("q")}
    a = await Controller.create(cfg, backends=backends)  # type: ignore[arg-type]
    await a.start()
    try:
        b = await Controller.create(cfg, backends=backends, recover=False)  # type: ignore[arg-type]
        await b.start()
        try:
            ticket = await b.create_ticket(
                owner="alice",
                requests=[Request(pool="p", count=2), Request(tags=("s390x",))],
            )
            got = await b.wait_ticket(ticket.id, timeout=DEADLINE)
            assert got.state is TicketState.ASSIGNED, got
            assert [name.rsplit("-", 1)[0] for name in got.vms] == ["p", "p", "q"]
            for name in got.vms:
                vm = await a.get_vm(name)
                assert vm.ticket == ticket.id and vm.load == 1
        finally:
            await b.stop()
    finally:
        await a.stop()
