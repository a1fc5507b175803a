"""The operators' endpoints (issue 12): pause, resume, drain, hold, release-hold, audit,
reconciliation's dry run, configuration reload; admin only, the caller recorded as actor.

What each test catches: an operator route open to user tokens; the actor not taken from the
token (or terminate not audited); a dry-run drain that drains; a bad hold accepted; a reload
route that pretends to work on a server without a configuration file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth

ADMIN = auth(ADMIN_TOKEN)
ALICE = auth(ALICE_TOKEN)

OPERATOR_ENDPOINTS = [
    ("POST", "/v1/pools/small/pause"),
    ("POST", "/v1/pools/small/resume"),
    ("POST", "/v1/pools/small/drain"),
    ("POST", "/v1/vms/x/hold"),
    ("POST", "/v1/vms/x/release-hold"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/reconcile"),
    ("POST", "/v1/config/reload"),
]


@pytest.mark.parametrize(("method", "path"), OPERATOR_ENDPOINTS)
async def test_operator_endpoints_need_an_admin(
    http: httpx.AsyncClient, method: str, path: str
) -> None:
    answer = await http.request(method, path, headers=ALICE)
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"
    assert (await http.request(method, path)).status_code == 401


async def _ready_vm(http: httpx.AsyncClient, pool: str = "small") -> str:
    for _ in range(200):
        vms = (await http.get("/v1/vms", params={"pool": pool}, headers=ADMIN)).json()
        ready = [v["name"] for v in vms if v["state"] == "ready"]
        if ready:
            return ready[0]
        await asyncio.sleep(0.05)
    raise AssertionError("no ready VM in time")


async def _audit(http: httpx.AsyncClient, **params: Any) -> list[tuple[str, str, str]]:
    found = await http.get("/v1/audit", params=params, headers=ADMIN)
    assert found.status_code == 200, found.text
    return [(e["actor"], e["action"], e["target"]) for e in found.json()]


async def test_pause_resume_and_drain(http: httpx.AsyncClient) -> None:
    paused = await http.post("/v1/pools/small/pause", headers=ADMIN)
    assert paused.json() == {"pool": "small", "mode": "paused"}
    assert (await http.get("/v1/pools/small", headers=ADMIN)).json()["mode"] == "paused"
    assert (await http.post("/v1/pools/small/resume", headers=ADMIN)).json()["mode"] == "active"
    vm = await _ready_vm(http)
    dry = (await http.post("/v1/pools/small/drain?dry_run=true", headers=ADMIN)).json()
    assert dry == {"pool": "small", "dry_run": True, "terminated": [vm]}
    assert (await http.get(f"/v1/vms/{vm}", headers=ADMIN)).json()["state"] == "ready"
    assert (await http.get("/v1/pools/small", headers=ADMIN)).json()["mode"] == "active"
    done = (await http.post("/v1/pools/small/drain", headers=ADMIN)).json()
    assert done["terminated"] == [vm] and done["dry_run"] is False
    assert (await http.get("/v1/pools/small", headers=ADMIN)).json()["mode"] == "draining"
    assert (await http.get(f"/v1/vms/{vm}", headers=ADMIN)).json()["state"] != "ready"
    actions = await _audit(http, pool="small")
    assert actions[0] == ("root", "draining", "small")
    assert ("root", "paused", "small") in actions and ("root", "resume", "small") in actions
    missing = await http.post("/v1/pools/nope/drain", headers=ADMIN)
    assert missing.status_code == 404


async def test_hold_release_and_terminate_are_audited_with_the_caller(
    http: httpx.AsyncClient,
) -> None:
    vm = await _ready_vm(http)
    for bad in ({"seconds": 0}, {"seconds": 8 * 86400}, {"seconds": "2h"}, {"for": 60}):
        refused = await http.post(f"/v1/vms/{vm}/hold", json=bad, headers=ADMIN)
        assert refused.status_code == 422, bad
    assert (await http.get(f"/v1/vms/{vm}", headers=ADMIN)).json()["state"] == "ready"
    held = (await http.post(f"/v1/vms/{vm}/hold", json={"seconds": 60}, headers=ADMIN)).json()
    assert held["state"] == "held" and held["hold_until"] is not None
    released = await http.post(f"/v1/vms/{vm}/release-hold", headers=ADMIN)
    assert released.json()["state"] in ("terminating", "terminated")
    other = await _ready_vm(http)
    default = (await http.post(f"/v1/vms/{other}/hold", headers=ADMIN)).json()
    assert default["hold_until"] - default["state_since"] == pytest.approx(86400, abs=5)
    await http.post(f"/v1/vms/{other}/terminate", headers=ADMIN)
    assert (await _audit(http, vm=vm))[:2] == [
        ("root", "release-hold", vm),
        ("root", "hold", vm),
    ]
    assert (await _audit(http, vm=other))[0] == ("root", "terminate", other)
    assert len(await _audit(http, limit=1)) == 1
    both = await http.get("/v1/audit", params={"vm": vm, "pool": "small"}, headers=ADMIN)
    assert both.status_code == 422


async def test_reconcile_dry_run_and_reload_without_a_file(http: httpx.AsyncClient) -> None:
    reports = (await http.get("/v1/reconcile", headers=ADMIN)).json()
    assert [r["pool"] for r in reports] == ["other", "small", "tiny"]
    assert all(r["sweep"] == [] and r["lost"] == [] for r in reports)
    refused = await http.post("/v1/config/reload", headers=ADMIN)
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "config_error"
    assert "without --config" in refused.json()["error"]["message"]
