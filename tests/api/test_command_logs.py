"""Command logs end to end: a script pool whose ``new`` fails; its output, exit status and
duration are kept per VM, served by ``GET /v1/vms/{name}/logs`` and shown on the VM page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth

from corral.api import create_app
from corral.config import parse_config
from corral.controller import Controller


@pytest.fixture
async def failing(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    raw = {
        "store": f"sqlite:///{tmp_path / 'corral.db'}",
        "api": {
            "tokens": {
                ADMIN_TOKEN: {"owner": "root", "role": "admin"},
                ALICE_TOKEN: {"owner": "alice", "role": "user"},
            }
        },
        "pools": {
            "broken": {
                "backend": {
                    "type": "script",
                    "new": ["sh", "-c", "echo starting; echo 'quota exceeded' >&2; exit 3"],
                    "delete": ["true"],
                },
                "max": 1,
                "max_starting": 1,
                "min_ready": 1,
            }
        },
    }
    config = parse_config(raw, env={})
    ctl = await Controller.create(config)
    app = create_app(ctl, config)  # hooks the backends before the first spawn
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            yield http, ctl
    finally:
        await ctl.stop()


async def _failed_vm(http: httpx.AsyncClient) -> str:
    async with asyncio.timeout(60):
        while True:
            vms = (
                await http.get("/v1/vms", params={"state": "failed"}, headers=auth(ADMIN_TOKEN))
            ).json()
            for vm in vms:
                logs = await http.get(f"/v1/vms/{vm['name']}/logs", headers=auth(ADMIN_TOKEN))
                if logs.json():
                    name: str = vm["name"]
                    return name
            await asyncio.sleep(0.05)


async def test_a_failed_spawns_output_is_kept_and_served(failing: Any) -> None:
    http, _ = failing
    name = await _failed_vm(http)
    response = await http.get(f"/v1/vms/{name}/logs", headers=auth(ADMIN_TOKEN))
    assert response.status_code == 200
    (spawn, *_) = response.json()
    assert spawn["command"] == "new" and spawn["exit_status"] == 3
    assert spawn["stdout"] == "starting\n" and spawn["stderr"] == "quota exceeded\n"
    assert spawn["argv"][0] == "sh" and spawn["duration"] >= 0 and spawn["pool"] == "broken"
    later = await http.get(
        f"/v1/vms/{name}/logs", params={"after": spawn["id"]}, headers=auth(ADMIN_TOKEN)
    )
    assert all(r["id"] > spawn["id"] for r in later.json())
    # the dashboard's VM page shows it
    await http.post("/ui/login", data={"token": ADMIN_TOKEN})
    page = await http.get(f"/ui/vms/{name}")
    assert "quota exceeded" in page.text and "exit 3" in page.text
    # the log is in <main>, not spilled into the page's <title> (an unclosed title block did)
    assert f"<title>VM {name} · corral</title>" in page.text


async def test_logs_need_an_admin_and_a_known_vm(failing: Any) -> None:
    http, _ = failing
    name = await _failed_vm(http)
    assert (await http.get(f"/v1/vms/{name}/logs", headers=auth(ALICE_TOKEN))).status_code == 403
    missing = await http.get("/v1/vms/nope/logs", headers=auth(ADMIN_TOKEN))
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "vm_not_found"
    bad = await http.get(f"/v1/vms/{name}/logs", params={"limit": 0}, headers=auth(ADMIN_TOKEN))
    assert bad.status_code == 422
