"""Multi-machine and exclusive tickets through ``POST /v1/tickets`` (issue 15), in-process.

What each test catches is in its docstring; the breakages were made by hand and each test seen
failing on its own (the route dropping ``count`` or ``exclusive``, the answer carrying the first
VM's address only, the idempotency check ignoring ``count``, the request model not strict).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth, controller_class
from multitools import multi_config

from corral.api import create_app

ALICE = auth(ALICE_TOKEN)
ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    config = multi_config()
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as c:
            yield c
    finally:
        await ctl.stop()


async def _post(http: httpx.AsyncClient, body: dict[str, Any], **kw: Any) -> httpx.Response:
    return await http.post("/v1/tickets", json=body, headers=ALICE, **kw)


async def _assigned(http: httpx.AsyncClient, ticket_id: str) -> dict[str, Any]:
    response = await http.get(f"/v1/tickets/{ticket_id}", params={"wait": 20}, headers=ALICE)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    assert data["state"] == "assigned", data
    return data


async def _vm(http: httpx.AsyncClient, name: str) -> dict[str, Any]:
    response = await http.get(f"/v1/vms/{name}", headers=ADMIN)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_a_count_ticket_gets_every_vm_with_its_address_and_frees_them_together(
    http: httpx.AsyncClient,
) -> None:
    """``count: 3`` answers three VMs with three addresses, ``vm``/``address`` the first; each VM
    names the ticket; closing frees all three. Breakage caught: the route not passing ``count``
    (one VM), the answer carrying only the first VM's address, a close freeing one VM only."""
    created = await _post(http, {"pool": "trio", "count": 3})
    assert created.status_code == 201, created.text
    assert (created.json()["count"], created.json()["exclusive"]) == (3, False)
    ticket = await _assigned(http, created.json()["id"])
    assert len(set(ticket["vms"])) == 3
    assert len(ticket["addresses"]) == 3 and all(ticket["addresses"])
    assert (ticket["vm"], ticket["address"]) == (ticket["vms"][0], ticket["addresses"][0])
    for name, address in zip(ticket["vms"], ticket["addresses"], strict=True):
        vm = await _vm(http, name)
        assert (vm["state"], vm["address"], vm["tickets"], vm["load"]) == (
            "in_use",
            address,
            [ticket["id"]],
            1,
        )
    listed = await http.get("/v1/tickets", headers=ALICE)
    [same] = [t for t in listed.json() if t["id"] == ticket["id"]]
    assert same["addresses"] == ticket["addresses"], "the listing's addresses differ"
    closed = await http.post(f"/v1/tickets/{ticket['id']}/close", headers=ALICE)
    assert closed.status_code == 200 and closed.json()["state"] == "closed"
    assert closed.json()["vms"] == ticket["vms"]
    for name in ticket["vms"]:
        assert (await _vm(http, name))["load"] == 0, f"{name} still held"


async def test_shared_tickets_share_a_vm_and_an_exclusive_one_waits_for_it_whole(
    http: httpx.AsyncClient,
) -> None:
    """Two tickets share the one VM of a 2-slot pool (it shows load 2 and both ids); an
    exclusive ticket waits until both are closed, then holds the VM alone. Breakage caught: the
    route dropping ``exclusive`` (the exclusive ticket would join the VM at once, or the answer
    would say ``exclusive: false``)."""
    first = (await _post(http, {"pool": "shared"})).json()
    a = await _assigned(http, first["id"])
    b = await _assigned(http, (await _post(http, {"pool": "shared"})).json()["id"])
    assert a["vm"] == b["vm"]
    vm = await _vm(http, a["vm"])
    assert (vm["load"], sorted(vm["tickets"]), vm["exclusive"]) == (
        2,
        sorted([a["id"], b["id"]]),
        False,
    )
    whole = await _post(http, {"pool": "shared", "exclusive": True})
    assert whole.status_code == 201 and whole.json()["exclusive"] is True
    await http.post(f"/v1/tickets/{a['id']}/close", headers=ALICE)
    waiting = await http.get(f"/v1/tickets/{whole.json()['id']}", headers=ALICE)
    assert waiting.json()["state"] == "waiting", "an exclusive ticket joined a shared VM"
    await http.post(f"/v1/tickets/{b['id']}/close", headers=ALICE)
    alone = await _assigned(http, whole.json()["id"])
    vm = await _vm(http, alone["vm"])
    assert (vm["load"], vm["tickets"], vm["exclusive"]) == (1, [alone["id"]], True)


BAD = [
    ({"count": 0}, "count"),
    ({"count": -1}, "count"),
    ({"count": "2"}, "count"),
    ({"count": 2.0}, "count"),
    ({"count": True}, "count"),
    ({"count": 1001}, "count"),
    ({"count": 4}, "count 4"),  # more than trio's max (3): it would wait for ever
    ({"exclusive": "yes"}, "exclusive"),
    ({"exclusive": 1}, "exclusive"),
]


@pytest.mark.parametrize(("extra", "named"), BAD)
async def test_bad_count_or_exclusive_is_a_422_naming_it_and_creates_nothing(
    http: httpx.AsyncClient, extra: dict[str, Any], named: str
) -> None:
    """Bad ``count``/``exclusive`` values are refused with 422 ``invalid_input``, the message
    naming the field, and no ticket is created. Breakage caught: the request model not strict
    (``"2"`` taken as 2), the bounds dropped, a count above every pool's max accepted."""
    response = await _post(http, {"pool": "trio", **extra})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input"
    assert named in error["message"], error
    assert (await http.get("/v1/tickets", headers=ALICE)).json() == []


async def test_an_idempotent_repeat_with_another_count_is_a_conflict(
    http: httpx.AsyncClient,
) -> None:
    """The same ``Idempotency-Key`` with the same body returns the first ticket; with another
    ``count`` or ``exclusive`` it is a 409. Breakage caught: ``_same_request`` ignoring them
    (the caller would believe it holds 3 VMs while the ticket asks for 2)."""
    key = {"Idempotency-Key": "multi-key-1", **ALICE}
    first = await http.post("/v1/tickets", json={"pool": "trio", "count": 2}, headers=key)
    again = await http.post("/v1/tickets", json={"pool": "trio", "count": 2}, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.json()["id"] == first.json()["id"]
    for other in ({"count": 3}, {"count": 2, "exclusive": True}):
        response = await http.post("/v1/tickets", json={"pool": "trio", **other}, headers=key)
        assert response.status_code == 409, response.text
        assert response.json()["error"]["code"] == "conflict"


async def test_a_count_ticket_waits_for_all_its_vms_not_half(http: httpx.AsyncClient) -> None:
    """With two of three VMs held, a ``count: 2`` ticket waits holding none; it gets both once
    they are free. Breakage caught: a partial assignment surfacing in the wire answer (``vms``
    shorter than ``count``)."""
    held = await _assigned(http, (await _post(http, {"pool": "trio", "count": 2})).json()["id"])
    pair = (await _post(http, {"pool": "trio", "count": 2})).json()
    await asyncio.sleep(0.2)  # give the assignment a chance to (wrongly) hand out the third VM
    now = (await http.get(f"/v1/tickets/{pair['id']}", headers=ALICE)).json()
    assert (now["state"], now["vms"], now["addresses"]) == ("waiting", [], [])
    await http.post(f"/v1/tickets/{held['id']}/close", headers=ALICE)
    got = await _assigned(http, pair["id"])
    assert len(got["vms"]) == len(got["addresses"]) == 2
