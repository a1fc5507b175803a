"""The dashboard's admin actions (issue 12): pause, resume and drain a pool, stop and roll back
a task, each behind a confirmation page; and the hosts page.

What each test catches: an action done by the GET of its confirmation page (a drain's dry run
draining), a POST that acts without naming the object again or when sent from another site, a
user allowed to act (or shown the buttons), the audit trail not recording the session's owner,
a task action that does nothing, the hosts page failing on a single host.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from apitools import ADMIN_TOKEN, ALICE_TOKEN, GATES, register_test_steps

from corral.tasks import Step


async def _login(http: httpx.AsyncClient, token: str) -> None:
    response = await http.post("/ui/login", data={"token": token, "next": "/ui/pools"})
    assert response.status_code == 303, response.text


async def _ready(controller: Any, pool: str) -> str:
    async with asyncio.timeout(30):
        while True:
            ready = await controller.list_vms(pool=pool, state="ready")
            if ready:
                return str(ready[0].name)
            await asyncio.sleep(0.01)


async def test_pool_actions_ask_first_and_are_audited(
    http: httpx.AsyncClient, controller: Any
) -> None:
    vm = await _ready(controller, "small")
    await _login(http, ADMIN_TOKEN)
    page = await http.get("/ui/pools")
    assert 'href="/ui/pools/small/drain"' in page.text
    assert 'href="/ui/pools/small/resume"' not in page.text  # active: nothing to resume
    confirm = await http.get("/ui/pools/small/drain")
    assert confirm.status_code == 200 and "Drain pool small?" in confirm.text
    assert f"{vm} (ready) would be terminated now" in confirm.text
    assert controller.pool_mode("small").value == "active"  # the dry run changed nothing
    assert (await http.post("/ui/pools/small/drain", data={})).status_code == 422
    cross = await http.post(
        "/ui/pools/small/drain",
        data={"confirm": "small"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert controller.pool_mode("small").value == "active"
    done = await http.post("/ui/pools/small/drain", data={"confirm": "small"})
    assert done.status_code == 303 and done.headers["location"] == "/ui/pools"
    assert controller.pool_mode("small").value == "draining"
    page = await http.get("/ui/pools")
    assert 'href="/ui/pools/small/resume"' in page.text
    assert 'href="/ui/pools/small/drain"' not in page.text
    resumed = await http.post("/ui/pools/small/resume", data={"confirm": "small"})
    assert resumed.status_code == 303
    assert controller.pool_mode("small").value == "active"
    paused = await http.post("/ui/pools/small/pause", data={"confirm": "small"})
    assert paused.status_code == 303
    assert controller.pool_mode("small").value == "paused"
    actions = [(e.actor, e.target) for e in await controller.audit(kind="pool")]
    assert actions.count(("root", "small")) >= 3
    assert (await http.get("/ui/pools/small/explode")).status_code == 404


async def test_a_user_neither_sees_nor_uses_the_actions(
    http: httpx.AsyncClient, controller: Any
) -> None:
    await _login(http, ALICE_TOKEN)
    page = await http.get("/ui/pools")
    assert page.status_code == 200 and "/ui/pools/small/" not in page.text
    assert (await http.get("/ui/pools/small/pause")).status_code == 403
    refused = await http.post("/ui/pools/small/pause", data={"confirm": "small"})
    assert refused.status_code == 403
    assert controller.pool_mode("small").value == "active"
    assert (await http.get("/ui/hosts")).status_code == 403


async def _task_state(controller: Any, task_id: str, states: set[str]) -> str:
    deadline = time.monotonic() + 60
    while True:
        state = str(controller.tasks.show(task_id).state)
        if state in states:
            return state
        assert time.monotonic() < deadline, f"task stuck in {state}"
        await asyncio.sleep(0.01)


async def test_task_stop_and_rollback_ask_first(http: httpx.AsyncClient, controller: Any) -> None:
    register_test_steps()
    GATES["ui-stop"], GATES["ui-back"] = asyncio.Event(), asyncio.Event()
    stopping = await controller.tasks.submit(
        "ui-test", jobs=[Step("test.api.gate", {"name": "ui-stop"})], clean="manual"
    )
    back = await controller.tasks.submit(
        "ui-test", jobs=[Step("test.api.gate", {"name": "ui-back"})], clean="manual"
    )
    await _task_state(controller, stopping, {"running"})
    GATES["ui-back"].set()
    await _task_state(controller, back, {"finished"})
    await _login(http, ADMIN_TOKEN)
    page = await http.get("/ui/tasks")
    assert f'href="/ui/tasks/{stopping}/stop"' in page.text
    assert f'href="/ui/tasks/{back}/rollback"' in page.text
    assert f'href="/ui/tasks/{back}/stop"' not in page.text  # finished: nothing to stop
    confirm = await http.get(f"/ui/tasks/{stopping}/stop")
    assert confirm.status_code == 200 and f"Stop task {stopping}?" in confirm.text
    assert str(controller.tasks.show(stopping).state) == "running"
    assert (await http.post(f"/ui/tasks/{stopping}/stop", data={})).status_code == 422
    done = await http.post(f"/ui/tasks/{stopping}/stop", data={"confirm": stopping})
    assert done.status_code == 303, done.text
    await _task_state(controller, stopping, {"failed", "recovered"})
    rolled = await http.post(f"/ui/tasks/{back}/rollback", data={"confirm": back})
    assert rolled.status_code == 303, rolled.text
    await _task_state(controller, back, {"recovered"})


async def test_hosts_page_on_a_single_host(http: httpx.AsyncClient) -> None:
    await _login(http, ADMIN_TOKEN)
    page = await http.get("/ui/hosts")
    assert page.status_code == 200
    assert 'id="single-host"' in page.text and "serves" in page.text
    assert 'aria-current="page">Hosts' in page.text
