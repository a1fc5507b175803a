"""The clients' operator calls (issue 12), over the I/O-free core.

What each test catches: a call sent to the wrong path or without its body or query (a hold of
the default length, a drain that is not a dry run); bad arguments sent instead of refused
locally; the async client missing a call the sync one has.
"""

from __future__ import annotations

import inspect

import httpx
import pytest
from apitools import ADMIN_TOKEN

from corral import exceptions
from corral.client import AsyncClient, Client, core


def test_calls() -> None:
    assert (core.pause_pool("p").method, core.pause_pool("p").path) == (
        "POST",
        "/v1/pools/p/pause",
    )
    assert core.resume_pool("a b").path == "/v1/pools/a%20b/resume"
    assert dict(core.drain_pool("p", dry_run=True).params) == {"dry_run": "true"}
    assert dict(core.drain_pool("p").params) == {}
    hold = core.hold_vm("vm-1", seconds=7200)
    assert (hold.path, hold.body) == ("/v1/vms/vm-1/hold", {"seconds": 7200.0})
    assert core.hold_vm("vm-1").body == {"seconds": 86400.0}
    assert core.release_hold("vm-1").path == "/v1/vms/vm-1/release-hold"
    assert dict(core.audit(vm="vm-1", limit=5).params) == {"vm": "vm-1", "limit": 5}
    assert core.reconcile_dry_run().path == "/v1/reconcile"
    assert (core.reload_config().method, core.reload_config().path) == (
        "POST",
        "/v1/config/reload",
    )


@pytest.mark.parametrize(
    "make",
    [
        lambda: core.hold_vm("v", seconds=0),
        lambda: core.hold_vm("v", seconds=8 * 86400),
        lambda: core.hold_vm("v", seconds=True),
        lambda: core.hold_vm("", seconds=60),
        lambda: core.audit(vm="v", pool="p"),
        lambda: core.audit(limit=0),
        lambda: core.pause_pool(""),
    ],
)
def test_bad_arguments_are_refused_before_sending(make: object) -> None:
    with pytest.raises(exceptions.InvalidInput):
        make()  # type: ignore[operator]


async def test_sync_and_async_clients_have_the_same_operator_calls(
    asgi: httpx.AsyncClient,
) -> None:
    names = [
        "pause_pool",
        "resume_pool",
        "drain_pool",
        "hold_vm",
        "release_hold",
        "audit",
        "reconcile_dry_run",
        "reload_config",
    ]
    for name in names:
        assert callable(getattr(Client, name)) and inspect.iscoroutinefunction(
            getattr(AsyncClient, name)
        )
    client = AsyncClient(token=ADMIN_TOKEN, http=asgi)
    assert (await client.pause_pool("small")).mode == "paused"
    assert (await client.drain_pool("small", dry_run=True)).dry_run is True
    assert (await client.resume_pool("small")).mode == "active"
    entries = await client.audit(pool="small")
    assert [(e.actor, e.action) for e in entries] == [("root", "resume"), ("root", "paused")]
    assert {r.pool for r in await client.reconcile_dry_run()} == {"small", "other", "tiny"}
    with pytest.raises(exceptions.ConfigError):
        await client.reload_config()
