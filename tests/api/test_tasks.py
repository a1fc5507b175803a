"""Task and lock endpoints against the controller's real task engine and lock manager."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from apitools import ADMIN_TOKEN, GATES, auth, register_test_steps

from corral.tasks import Step

ADMIN = auth(ADMIN_TOKEN)


async def _submit(controller: Any, name: str, **policy: str) -> str:
    register_test_steps()
    GATES[name] = asyncio.Event()
    task_id: str = await controller.tasks.submit(
        "api-test",
        jobs=[Step("test.api.gate", {"name": name})],
        locks={f"test/{name}": "exclusive"},
        tag=f"test:{name}",
        clean="manual",
        **policy,
    )
    return task_id


async def _state(http: httpx.AsyncClient, task_id: str, states: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 60  # generous: a loaded 2-core machine must not fail it
    while True:
        task: dict[str, Any] = (await http.get(f"/v1/tasks/{task_id}", headers=ADMIN)).json()
        if task["state"] in states:
            return task
        assert time.monotonic() < deadline, f"task stuck in {task['state']}"
        await asyncio.sleep(0.01)


async def test_show_list_rollback_clean(http: httpx.AsyncClient, controller: Any) -> None:
    task_id = await _submit(controller, "a")
    running = await _state(http, task_id, {"running"})
    assert running["verb"] == "api-test"
    assert running["jobs_total"] == 1
    assert running["recoveries"] == ["test.api.undo"]
    locks = (await http.get("/v1/locks", headers=ADMIN)).json()
    held = {lock["key"]: lock for lock in locks}
    assert held["test/a"]["mode"] == "exclusive"
    assert held["test/a"]["holders"][0]["owner"] == task_id
    listed = (await http.get("/v1/tasks", params={"tag": "test:a"}, headers=ADMIN)).json()
    assert [t["id"] for t in listed] == [task_id]
    early = await http.delete(f"/v1/tasks/{task_id}", headers=ADMIN)
    assert early.status_code == 409
    assert early.json()["error"]["code"] == "task_not_done"
    GATES["a"].set()
    finished = await _state(http, task_id, {"finished"})
    assert finished["result"] == {"gate": "a"}
    by_state = (await http.get("/v1/tasks", params={"state": "finished"}, headers=ADMIN)).json()
    assert task_id in {t["id"] for t in by_state}
    rolled = await http.post(f"/v1/tasks/{task_id}/rollback", headers=ADMIN)
    assert rolled.status_code == 200, rolled.text
    await _state(http, task_id, {"recovered"})
    again = await http.post(f"/v1/tasks/{task_id}/rollback", headers=ADMIN)
    assert again.status_code == 409
    cleaned = await http.delete(f"/v1/tasks/{task_id}", headers=ADMIN)
    assert cleaned.status_code == 204
    gone = await http.get(f"/v1/tasks/{task_id}", headers=ADMIN)
    assert gone.status_code == 404


async def test_stop_rolls_back(http: httpx.AsyncClient, controller: Any) -> None:
    task_id = await _submit(controller, "b", recovery="auto")
    await _state(http, task_id, {"running"})
    stopped = await http.post(f"/v1/tasks/{task_id}/stop", headers=ADMIN)
    assert stopped.status_code == 200
    ended = await _state(http, task_id, {"recovered", "failed"})
    assert ended["state"] == "recovered"
    GATES["b"].set()


async def test_bad_task_filters(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1/tasks", params={"state": "dreaming"}, headers=ADMIN)
    assert response.status_code == 422
    assert "state" in response.json()["error"]["message"]
