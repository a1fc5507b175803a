"""Pool, VM, task and lock endpoints, health, metrics, OpenAPI and the auth rules around them."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth, controller_class, make_config

from corral.api import create_app
from corral.config import parse_config

ADMIN = auth(ADMIN_TOKEN)
ALICE = auth(ALICE_TOKEN)

ADMIN_ENDPOINTS = [
    ("GET", "/v1/pools"),
    ("GET", "/v1/pools/small"),
    ("GET", "/v1/vms"),
    ("GET", "/v1/vms/x"),
    ("POST", "/v1/vms/x/terminate"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/x"),
    ("POST", "/v1/tasks/x/stop"),
    ("POST", "/v1/tasks/x/rollback"),
    ("DELETE", "/v1/tasks/x"),
    ("GET", "/v1/locks"),
]


async def _assigned_vm(http: httpx.AsyncClient) -> dict[str, Any]:
    created = await http.post("/v1/tickets", json={"pool": "small"}, headers=ADMIN)
    ticket = created.json()
    polled = await http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 10}, headers=ADMIN)
    data: dict[str, Any] = polled.json()
    assert data["state"] == "assigned"
    return data


async def test_pools(http: httpx.AsyncClient) -> None:
    pools = (await http.get("/v1/pools", headers=ADMIN)).json()
    assert {p["name"] for p in pools} == {"small", "other", "tiny"}
    small = (await http.get("/v1/pools/small", headers=ADMIN)).json()
    assert small["max"] == 4
    assert small["max_starting"] == 2
    assert set(small["tags"]) == {"x86_64", "fedora"}
    assert small["backend"] == "fake"
    missing = await http.get("/v1/pools/nope", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "pool_not_found"


async def test_vms(http: httpx.AsyncClient) -> None:
    ticket = await _assigned_vm(http)
    vms = (await http.get("/v1/vms", headers=ADMIN)).json()
    assert ticket["vm"] in {v["name"] for v in vms}
    vm = (await http.get(f"/v1/vms/{ticket['vm']}", headers=ADMIN)).json()
    assert vm["state"] == "in_use"
    assert vm["ticket"] == ticket["id"]
    assert "handle" not in vm
    in_use = (await http.get("/v1/vms", params={"state": "in_use"}, headers=ADMIN)).json()
    assert {v["state"] for v in in_use} == {"in_use"}
    other = (await http.get("/v1/vms", params={"pool": "other"}, headers=ADMIN)).json()
    assert all(v["pool"] == "other" for v in other)
    bad_pool = await http.get("/v1/vms", params={"pool": "nope"}, headers=ADMIN)
    assert bad_pool.status_code == 404
    bad_state = await http.get("/v1/vms", params={"state": "asleep"}, headers=ADMIN)
    assert bad_state.status_code == 422
    assert "state" in bad_state.json()["error"]["message"]
    missing = await http.get("/v1/vms/nope", headers=ADMIN)
    assert missing.json()["error"]["code"] == "vm_not_found"


async def test_terminate_vm(http: httpx.AsyncClient) -> None:
    ticket = await _assigned_vm(http)
    response = await http.post(f"/v1/vms/{ticket['vm']}/terminate", headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["state"] in {"terminating", "terminated"}
    missing = await http.post("/v1/vms/nope/terminate", headers=ADMIN)
    assert missing.status_code == 404


async def test_tasks_and_locks(http: httpx.AsyncClient) -> None:
    tasks = await http.get("/v1/tasks", headers=ADMIN)
    assert tasks.status_code == 200
    assert isinstance(tasks.json(), list)
    for method, path in [
        ("GET", "/v1/tasks/nope"),
        ("POST", "/v1/tasks/nope/stop"),
        ("POST", "/v1/tasks/nope/rollback"),
        ("DELETE", "/v1/tasks/nope"),
    ]:
        response = await http.request(method, path, headers=ADMIN)
        assert response.status_code == 404, (method, path)
        assert response.json()["error"]["code"] == "task_not_found"
    locks = await http.get("/v1/locks", headers=ADMIN)
    assert locks.status_code == 200
    assert isinstance(locks.json(), list)


@pytest.mark.parametrize(("method", "path"), ADMIN_ENDPOINTS)
async def test_admin_endpoints_need_admin(http: httpx.AsyncClient, method: str, path: str) -> None:
    user = await http.request(method, path, headers=ALICE)
    assert user.status_code == 403
    assert user.json()["error"]["code"] == "forbidden"
    anonymous = await http.request(method, path)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["code"] == "unauthorized"


async def test_bad_tokens(http: httpx.AsyncClient) -> None:
    for header in ["Bearer wrong-token-1", "Basic YWxpY2U6eA==", "Bearer ", "Bearer"]:
        response = await http.get("/v1/tickets", headers={"Authorization": header})
        assert response.status_code == 401, header
        body = response.json()
        assert body["error"]["code"] == "unauthorized"
        assert "wrong-token-1" not in response.text


async def test_open_server_without_tokens() -> None:
    config = make_config(tokens=False)
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            assert (await http.get("/v1/pools")).status_code == 200
            ticket = (await http.post("/v1/tickets", json={"pool": "small"})).json()
            assert ticket["owner"] == "anonymous"
            named = (await http.post("/v1/tickets", json={"pool": "small", "owner": "x"})).json()
            assert named["owner"] == "x"
    finally:
        await ctl.stop()


async def test_health_and_metrics(http: httpx.AsyncClient) -> None:
    health = await http.get("/healthz")
    assert health.json()["status"] == "ok"
    await _assigned_vm(http)
    metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert re.search(r'corral_tickets\{pool="small",state="assigned"\} 1\.0', text)
    assert re.search(r'corral_vms\{pool="small",state="in_use"\} 1\.0', text)
    assert 'corral_allocation_seconds_count{pool="small"} 1.0' in text
    assert "corral_spawn_seconds_bucket" in text
    assert 'corral_backend_failures_total{operation="spawn",pool="small"}' in text
    assert "corral_tasks" in text
    again = (await http.get("/metrics")).text
    assert 'corral_allocation_seconds_count{pool="small"} 1.0' in again, "observed once"


async def test_unknown_route_and_method(http: httpx.AsyncClient) -> None:
    missing = await http.get("/v1/nothing", headers=ADMIN)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await http.put("/v1/tickets", headers=ADMIN)
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "method_not_allowed"


async def test_openapi_documents_every_endpoint(http: httpx.AsyncClient) -> None:
    schema = (await http.get("/openapi.json")).json()
    paths = schema["paths"]
    expected = {
        "/v1/tickets": {"get", "post"},
        "/v1/tickets/{ticket_id}": {"get"},
        "/v1/tickets/{ticket_id}/renew": {"post"},
        "/v1/tickets/{ticket_id}/close": {"post"},
        "/v1/pools": {"get"},
        "/v1/pools/{name}": {"get"},
        "/v1/vms": {"get"},
        "/v1/vms/{name}": {"get"},
        "/v1/vms/{name}/terminate": {"post"},
        "/v1/tasks": {"get"},
        "/v1/tasks/{task_id}": {"get", "delete"},
        "/v1/tasks/{task_id}/stop": {"post"},
        "/v1/tasks/{task_id}/rollback": {"post"},
        "/v1/locks": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
    create = paths["/v1/tickets"]["post"]["responses"]
    assert "201" in create
    assert create["422"]["content"]["application/json"]["schema"]["$ref"].endswith("ErrorBody")


async def test_metrics_count_backend_failures() -> None:
    raw = {
        "store": "memory://",
        "pools": {
            "broken": {
                "backend": {"type": "fake", "spawn_failure_rate": 1.0, "seed": 1},
                "max": 2,
                "max_starting": 1,
                "min_ready": 1,
            }
        },
    }
    config = parse_config(raw, env={})
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            pattern = re.compile(
                r'corral_backend_failures_total\{operation="spawn",pool="broken"\} ([0-9.]+)'
            )
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                found = pattern.search((await http.get("/metrics")).text)
                assert found, "the failure counter is exported"
                if float(found.group(1)) >= 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, "no failure counted"
                await asyncio.sleep(0.05)
    finally:
        await ctl.stop()
