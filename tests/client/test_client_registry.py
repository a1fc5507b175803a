"""The clients' issue-15 calls: register, forget, return, pool info (over the I/O-free core).

What each test catches: a call sent to the wrong path or without its body or query (a forget
that is always forced, a deletion sent as a PUT of null); bad arguments sent instead of refused
locally; the async client missing a call the sync one has; server errors not turned back into
the server's exception classes.
"""

from __future__ import annotations

import asyncio
import inspect

import httpx
import pytest
from apitools import ADMIN_TOKEN

from corral import exceptions
from corral.client import AsyncClient, Client, core

CALLS = [
    "register_vm",
    "forget_vm",
    "return_machine",
    "machine_maintenance",
    "pool_info",
    "get_pool_info",
    "set_pool_info",
]


def test_calls() -> None:
    reg = core.register_vm("p", "m-1", "192.0.2.1")
    assert (reg.method, reg.path, reg.body) == (
        "POST",
        "/v1/vms",
        {"pool": "p", "name": "m-1", "address": "192.0.2.1"},
    )
    assert core.forget_vm("vm 1").path == "/v1/vms/vm%201/forget"
    assert dict(core.forget_vm("v").params) == {}
    assert dict(core.forget_vm("v", force=True).params) == {"force": "true"}
    assert (core.return_machine("m1").method, core.return_machine("m1").path) == (
        "POST",
        "/v1/vms/m1/return",
    )
    down = core.machine_maintenance("m1", "disk swap")
    assert (down.method, down.path, down.body) == (
        "POST",
        "/v1/vms/m1/maintenance",
        {"reason": "disk swap"},
    )
    assert core.get_pool_info("p").path == "/v1/pools/p/info"
    assert core.get_pool_info_key("p", "k").path == "/v1/pools/p/info/k"
    put = core.set_pool_info("p", "k", [1, 2])
    assert (put.method, put.path, put.body) == ("PUT", "/v1/pools/p/info/k", {"value": [1, 2]})
    delete = core.set_pool_info("p", "k", None)
    assert (delete.method, delete.body) == ("DELETE", None)


@pytest.mark.parametrize(
    "make",
    [
        lambda: core.register_vm("", "m", "192.0.2.1"),
        lambda: core.register_vm("p", "", "192.0.2.1"),
        lambda: core.register_vm("p", "m", ""),
        lambda: core.forget_vm(""),
        lambda: core.return_machine(""),
        lambda: core.machine_maintenance("m1", " "),
        lambda: core.get_pool_info(""),
        lambda: core.set_pool_info("p", "", 1),
    ],
)
def test_bad_arguments_are_refused_before_sending(make: object) -> None:
    with pytest.raises(exceptions.InvalidInput):
        make()  # type: ignore[operator]


async def test_the_async_client_round_trip(asgi: httpx.AsyncClient) -> None:
    for name in CALLS:
        assert callable(getattr(Client, name)) and inspect.iscoroutinefunction(
            getattr(AsyncClient, name)
        )
    client = AsyncClient(token=ADMIN_TOKEN, http=asgi)
    with pytest.raises(exceptions.MachineNotAlive):  # the fake host has no such machine
        await client.register_vm("small", "ghost-1", "192.0.2.30")
    with pytest.raises(exceptions.VMNotFound):
        await client.forget_vm("nope-1")
    with pytest.raises(exceptions.MachineNotFound):
        await client.return_machine("m1")
    with pytest.raises(exceptions.MachineNotFound):
        await client.machine_maintenance("m1", "disk swap")
    ready: list[str] = []
    for _ in range(200):
        ready = [v.name for v in await client.list_vms(pool="small", state="ready")]
        if ready:
            break
        await asyncio.sleep(0.05)
    assert ready, "no ready VM in time"
    forgotten = await client.forget_vm(ready[0])
    assert forgotten.external and forgotten.state in ("terminating", "forgotten")
    await client.set_pool_info("small", "chroot", "fedora-41")
    assert await client.pool_info("small") == {"chroot": "fedora-41"}
    assert await client.get_pool_info("small", "chroot") == "fedora-41"
    await client.set_pool_info("small", "chroot", None)
    with pytest.raises(exceptions.NotFound):
        await client.get_pool_info("small", "chroot")
