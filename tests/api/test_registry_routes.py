"""Issue 15's endpoints: register a machine made elsewhere (``POST /v1/vms``), forget a VM
(``POST /v1/vms/{name}/forget``), return a static machine (``POST /v1/vms/{name}/return``) and
the per-pool info (``/v1/pools/{name}/info[/{key}]``).

What each test catches: a write open to user tokens (or to no token); the actor not taken from
the token; bad input reaching the controller (or changing anything); a null info value storing
a deletion; errors mapped to the wrong code.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth

from corral.backends.fake import FakeBackend

ADMIN = auth(ADMIN_TOKEN)
ALICE = auth(ALICE_TOKEN)

ADMIN_ONLY = [
    ("POST", "/v1/vms", {"pool": "small", "name": "m-1", "address": "192.0.2.1"}),
    ("POST", "/v1/vms/x/forget", None),
    ("POST", "/v1/vms/x/return", None),
    ("POST", "/v1/vms/x/maintenance", {"reason": "r"}),
    ("PUT", "/v1/pools/small/info/k", {"value": 1}),
    ("DELETE", "/v1/pools/small/info/k", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
async def test_writes_need_an_admin(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    answer = await http.request(method, path, headers=ALICE, json=body)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert (await http.request(method, path, json=body)).status_code == 401


def _fake(controller: Any, pool: str = "small") -> FakeBackend:
    backend = controller.backend(pool).backend
    assert isinstance(backend, FakeBackend)
    return backend


async def test_register_then_forget_through_the_api(
    http: httpx.AsyncClient, controller: Any
) -> None:
    fake = _fake(controller)
    await fake.inject("builder-1")
    body = {"pool": "small", "name": "builder-1", "address": "192.0.2.20"}
    made = await http.post("/v1/vms", json=body, headers=ADMIN)
    assert made.status_code == 201, made.text
    vm = made.json()
    assert (vm["name"], vm["state"], vm["external"], vm["address"]) == (
        "builder-1",
        "ready",
        True,
        "192.0.2.20",
    )
    again = await http.post("/v1/vms", json=body, headers=ADMIN)
    assert again.status_code == 409 and again.json()["error"]["code"] == "vm_exists"
    gone = await http.post("/v1/vms/builder-1/forget", headers=ADMIN)
    assert gone.status_code == 200, gone.text
    assert gone.json()["state"] in ("terminating", "forgotten")
    audit = (await http.get("/v1/audit", params={"vm": "builder-1"}, headers=ADMIN)).json()
    assert {(e["actor"], e["action"]) for e in audit} >= {("root", "register"), ("root", "forget")}
    assert "builder-1" in await fake.names()


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"pool": "nope", "name": "m-1", "address": "192.0.2.1"}, 404, "pool_not_found"),
        ({"pool": "small", "name": "m 1", "address": "192.0.2.1"}, 422, "invalid_input"),
        ({"pool": "small", "name": "small-000999", "address": "192.0.2.1"}, 422, "invalid_input"),
        ({"pool": "small", "name": "m-1", "address": "999.1.1.1"}, 422, "invalid_input"),
        ({"pool": "small", "name": "m-1"}, 422, "invalid_input"),
        ({"pool": "small", "name": "m-1", "address": "192.0.2.1", "x": 1}, 422, "invalid_input"),
        ({"pool": "small", "name": "ghost", "address": "192.0.2.1"}, 409, "machine_not_alive"),
    ],
)
async def test_bad_registrations(
    http: httpx.AsyncClient, controller: Any, body: dict[str, Any], status: int, code: str
) -> None:
    await _fake(controller).inject("m-1")
    answer = await http.post("/v1/vms", json=body, headers=ADMIN)
    assert answer.status_code == status, answer.text
    assert answer.json()["error"]["code"] == code
    assert body.get("name") not in {v.name for v in await controller.list_vms()}


async def test_forget_errors(http: httpx.AsyncClient, controller: Any) -> None:
    missing = await http.post("/v1/vms/nope-1/forget", headers=ADMIN)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "vm_not_found"
    ticket = (await http.post("/v1/tickets", json={"pool": "small"}, headers=ALICE)).json()
    held = (await http.get(f"/v1/tickets/{ticket['id']}?wait=10", headers=ALICE)).json()
    assert held["vm"] is not None
    busy = await http.post(f"/v1/vms/{held['vm']}/forget", headers=ADMIN)
    assert busy.status_code == 409 and busy.json()["error"]["code"] == "vm_in_use"
    forced = await http.post(f"/v1/vms/{held['vm']}/forget?force=true", headers=ADMIN)
    assert forced.status_code == 200, forced.text
    after = (await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)).json()
    assert after["state"] == "failed"


async def test_return_of_a_machine_no_static_pool_has(http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/vms/m9/return", headers=ADMIN)
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "machine_not_found"
    down = await http.post("/v1/vms/m9/maintenance", json={"reason": "disk"}, headers=ADMIN)
    assert down.status_code == 404 and down.json()["error"]["code"] == "machine_not_found"
    empty = await http.post("/v1/vms/m9/maintenance", json={"reason": ""}, headers=ADMIN)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "invalid_input"


async def test_pool_info_round_trip(http: httpx.AsyncClient) -> None:
    empty = await http.get("/v1/pools/small/info", headers=ALICE)
    assert empty.status_code == 200 and empty.json() == {}
    put = await http.put(
        "/v1/pools/small/info/last-build", json={"value": {"id": 7}}, headers=ADMIN
    )
    assert put.status_code == 200, put.text
    assert put.json() == {"pool": "small", "key": "last-build", "value": {"id": 7}}
    assert (await http.get("/v1/pools/small/info", headers=ALICE)).json() == {
        "last-build": {"id": 7}
    }
    one = await http.get("/v1/pools/small/info/last-build", headers=ALICE)
    assert one.json()["value"] == {"id": 7}
    null = await http.put("/v1/pools/small/info/last-build", json={"value": None}, headers=ADMIN)
    assert null.status_code == 422 and "DELETE" in null.json()["error"]["message"]
    bad_key = await http.put("/v1/pools/small/info/a%20b", json={"value": 1}, headers=ADMIN)
    assert bad_key.status_code == 422
    big = await http.put("/v1/pools/small/info/big", json={"value": "x" * 20_000}, headers=ADMIN)
    assert big.status_code == 422
    unknown = await http.get("/v1/pools/nope/info", headers=ALICE)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "pool_not_found"
    assert (await http.delete("/v1/pools/small/info/last-build", headers=ADMIN)).status_code == 200
    gone = await http.get("/v1/pools/small/info/last-build", headers=ALICE)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert (await http.get("/v1/pools/small/info", headers=ALICE)).json() == {}
