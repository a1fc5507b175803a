"""List tickets (``requests``) through ``POST /v1/tickets`` (issue 15), in-process.

Each test names the breakage it catches (made by hand, each test seen failing on its own).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth, controller_class
from multitools import list_config

from corral.api import create_app

ALICE = auth(ALICE_TOKEN)
ADMIN = auth(ADMIN_TOKEN)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    config = list_config()
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


BODY = {"requests": [{"pool": "x86", "count": 2}, {"tags": ["s390x"]}]}


async def test_a_list_ticket_gets_a_vm_per_machine_in_entry_order_and_frees_them(
    http: httpx.AsyncClient,
) -> None:
    """Two x86 and one s390x: ``vms`` in entry order (the s390x one last), each with its
    address, ``requests`` echoed; closing frees all three. Breakage caught: the route dropping
    ``requests`` (refused as having no pool), VMs not in entry order, a close freeing one."""
    created = await _post(http, BODY, params={"wait": 20})
    assert created.status_code == 201, created.text
    ticket = created.json()
    assert ticket["state"] == "assigned", ticket
    assert ticket["count"] == 3 and ticket["pool"] is None
    assert ticket["requests"] == [
        {"pool": "x86", "tags": [], "count": 2},
        {"pool": None, "tags": ["s390x"], "count": 1},
    ]
    assert [n.rsplit("-", 1)[0] for n in ticket["vms"]] == ["x86", "x86", "s390x"]
    assert len(ticket["addresses"]) == 3 and all(ticket["addresses"])
    assert ticket["vm"] == ticket["vms"][0]
    closed = await http.post(f"/v1/tickets/{ticket['id']}/close", headers=ALICE)
    assert closed.status_code == 200, closed.text
    for name in ticket["vms"]:
        vm = (await http.get(f"/v1/vms/{name}", headers=ADMIN)).json()
        assert vm["tickets"] == [] and vm["state"] != "in_use", vm


async def test_max_per_owner_counts_the_list_tickets_machines_per_pool(
    http: httpx.AsyncClient,
) -> None:
    """Alice holds the one s390x VM her limit allows: her second list ticket waits (its x86
    entry is not taken alone) while Bob's is served. Breakage caught: the limit not applied
    to list tickets, or a partial assignment (the x86 VM given while s390x waits)."""
    first = await _post(http, BODY, params={"wait": 20})
    assert first.json()["state"] == "assigned"
    second = await _post(http, {"requests": [{"pool": "x86"}, {"pool": "s390x"}]})
    assert second.status_code == 201, second.text
    again = await http.get(
        f"/v1/tickets/{second.json()['id']}", params={"wait": 0.5}, headers=ALICE
    )
    assert again.json()["state"] == "waiting" and again.json()["vms"] == []
    await http.post(f"/v1/tickets/{first.json()['id']}/close", headers=ALICE)
    done = await http.get(f"/v1/tickets/{second.json()['id']}", params={"wait": 20}, headers=ALICE)
    assert done.json()["state"] == "assigned", done.json()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"requests": []}, "requests"),
        ({"requests": [{"pool": "x86"}] * 17}, "requests"),
        ({"requests": [{"pool": "x86", "tags": ["x86"]}]}, "requests.0"),
        ({"requests": [{"count": 2}]}, "requests.0"),
        ({"requests": [{"pool": "x86", "count": 0}]}, "count"),
        ({"requests": [{"pool": "x86", "count": "2"}]}, "count"),
        ({"requests": [{"pool": "x86", "size": 2}]}, "size"),
        ({"pool": "x86", "requests": [{"pool": "x86"}]}, "not with 'pool'"),
        ({"count": 2, "requests": [{"pool": "x86"}]}, "not with 'pool', 'tags' or 'count'"),
        ({"requests": [{"pool": "nope"}]}, "nope"),
        ({"requests": [{"pool": "x86"}, {"tags": ["arm"]}]}, "requests[1]: no pool has the tags"),
        ({"requests": [{"pool": "s390x", "count": 2}]}, "more than the pools can give"),
        ({"requests": [{"tags": ["x86"], "count": 2}, {"pool": "x86", "count": 2}]}, "x86"),
    ],
)
async def test_bad_list_tickets_are_refused_naming_what_is_wrong(
    http: httpx.AsyncClient, body: dict[str, Any], words: str
) -> None:
    """Each bad body is refused (4xx, an error naming the field or entry) and creates nothing.
    Breakage caught: an entry with both or neither of pool and tags accepted, ``requests``
    mixed with top-level pool/count, a list that can never be served (more than a pool's max
    or max_per_owner, summed over entries) queued to wait for ever."""
    response = await _post(http, body)
    assert 400 <= response.status_code < 500, response.text
    error = response.json()["error"]
    assert words in error["message"], error
    assert error["code"] in {"invalid_input", "no_matching_pool", "pool_not_found"}
    listed = await http.get("/v1/tickets", headers=ALICE)
    assert listed.json() == []


async def test_the_idempotency_key_compares_the_entries(http: httpx.AsyncClient) -> None:
    """The same key with the same list answers the same ticket; with another list, a conflict.
    Breakage caught: the key's check ignoring ``requests`` (another list answered the first)."""
    key = {"Idempotency-Key": "k-list-1"}
    headers = {**ALICE, **key}
    first = await http.post("/v1/tickets", json=BODY, headers=headers)
    same = await http.post("/v1/tickets", json=BODY, headers=headers)
    assert first.status_code == 201 and same.json()["id"] == first.json()["id"]
    other = {"requests": [{"pool": "x86", "count": 1}, {"tags": ["s390x"]}]}
    clash = await http.post("/v1/tickets", json=other, headers=headers)
    assert clash.status_code == 409, clash.text
