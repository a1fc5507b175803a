"""Ticket metadata, searching by it, and conditional terminate through the HTTP API (issue 15),
in-process, with their bad input.

What each test catches: the route not passing ``meta`` on (a ticket without it, a search that
finds nothing); ``ticket_meta`` ignored by ``GET /v1/vms`` (Copr's ``get_vm_by_task_id`` would
return every VM); the metadata bounds not enforced (17 keys, a 257-character value, 4 KiB, a
number, a malformed filter key) or enforced after the ticket was created; ``if_state`` ignored
(the VM terminated in a state not asked for) or an unknown state taken as "no match" instead of
refused.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth

ALICE = auth(ALICE_TOKEN)
ADMIN = auth(ADMIN_TOKEN)


async def _assigned(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    created = await http.post("/v1/tickets", json=body, params={"wait": 20}, headers=ALICE)
    assert created.status_code == 201, created.text
    data: dict[str, Any] = created.json()
    assert data["state"] == "assigned", data
    return data


async def test_metadata_is_kept_and_finds_the_ticket_and_its_vm(http: httpx.AsyncClient) -> None:
    """Breakages caught: the route dropping ``meta`` (mutant ``ticket-meta-dropped``), a
    search matching any one pair instead of every pair, ``ticket_meta`` ignored by the VM list."""
    meta = {"task": "123", "chroot": "fedora-41-x86_64"}
    ticket = await _assigned(http, {"pool": "small", "meta": meta})
    other = await _assigned(http, {"pool": "small", "meta": {"task": "124"}})
    assert ticket["meta"] == meta
    found = await http.get("/v1/tickets", params={"meta": ["task=123"]}, headers=ALICE)
    assert [t["id"] for t in found.json()] == [ticket["id"]]
    both = await http.get(
        "/v1/tickets", params={"meta": ["task=123", "chroot=fedora-41-x86_64"]}, headers=ALICE
    )
    assert [t["id"] for t in both.json()] == [ticket["id"]]
    none = await http.get(
        "/v1/tickets", params={"meta": ["task=123", "chroot=other"]}, headers=ALICE
    )
    assert none.json() == [], "every pair must match"
    vms = await http.get("/v1/vms", params={"ticket_meta": ["task=124"]}, headers=ADMIN)
    assert vms.status_code == 200, vms.text
    assert [v["name"] for v in vms.json()] == [other["vm"]]
    shown = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert shown.json()["meta"] == meta


BAD_META = [
    ({f"k{i}": "v" for i in range(17)}, "17 keys"),
    ({"task": "x" * 257}, "at most 256"),
    ({f"k{i}": "x" * 256 for i in range(16)}, "bytes, at most"),
    ({"task": 123}, "meta"),
    ({"bad key": "v"}, "'bad key'"),
    ({"task": "a\nb"}, "printable"),
]


@pytest.mark.parametrize(("meta", "named"), BAD_META)
async def test_bad_metadata_is_a_422_naming_it_and_creates_nothing(
    http: httpx.AsyncClient, meta: dict[str, Any], named: str
) -> None:
    """Breakage caught: a bound of ``check_meta`` dropped, or checked after the ticket was
    created."""
    response = await http.post("/v1/tickets", json={"pool": "small", "meta": meta}, headers=ALICE)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert named in response.json()["error"]["message"], response.json()
    assert (await http.get("/v1/tickets", headers=ALICE)).json() == []


@pytest.mark.parametrize(
    ("path", "param", "value", "named"),
    [
        ("/v1/tickets", "meta", "task", "not KEY=VALUE"),
        ("/v1/tickets", "meta", "=123", "not KEY=VALUE"),
        ("/v1/tickets", "meta", "bad key=1", "'bad key'"),
        ("/v1/vms", "ticket_meta", "task", "not KEY=VALUE"),
        ("/v1/vms", "ticket_meta", "ta/sk=1", "'ta/sk'"),
    ],
)
async def test_a_malformed_metadata_filter_is_a_422(
    http: httpx.AsyncClient, path: str, param: str, value: str, named: str
) -> None:
    """Breakage caught: a malformed filter taken as "no match" (an empty answer) instead of
    refused."""
    response = await http.get(path, params={param: [value]}, headers=ADMIN)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == "invalid_input"
    assert named in response.json()["error"]["message"], response.json()


async def test_conditional_terminate(http: httpx.AsyncClient) -> None:
    """Breakages caught: ``if_state`` ignored (mutant ``if-state-ignored``: the VM terminated
    while ``in_use``), an unknown state taken as "no match", a user allowed to terminate."""
    ticket = await _assigned(http, {"pool": "small"})
    name = ticket["vm"]
    url = f"/v1/vms/{name}/terminate"
    refused = await http.post(url, params={"if_state": "ready,spawning"}, headers=ADMIN)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["code"] == "vm_state_mismatch" and "in_use" in error["message"], error
    assert (await http.get(f"/v1/vms/{name}", headers=ADMIN)).json()["state"] == "in_use"
    assert (await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)).json()["state"] == (
        "assigned"
    )
    bogus = await http.post(url, params={"if_state": ["in_use", "bogus"]}, headers=ADMIN)
    assert bogus.status_code == 422, bogus.text
    assert "bogus" in bogus.json()["error"]["message"]
    assert (await http.get(f"/v1/vms/{name}", headers=ADMIN)).json()["state"] == "in_use"
    user = await http.post(url, params={"if_state": "in_use"}, headers=ALICE)
    assert user.status_code == 403, "terminate is admin only"
    done = await http.post(url, params={"if_state": ["ready", "in_use"]}, headers=ADMIN)
    assert done.status_code == 200, done.text
    assert done.json()["state"] in ("terminating", "terminated")
    failed = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert failed.json()["state"] == "failed"
