"""The dashboard in-process: login and its cookie, what a user and an admin see, the confirmed
terminate, cross-site refusal, offline ``/docs``, and the pure SVG helpers."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, auth

from corral.api.ui import charts
from corral.api.ui.session import Sessions


async def _login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/ui/login", data={"token": token, "next": "/ui/tickets"})


async def _ticket(http: httpx.AsyncClient, token: str) -> str:
    response = await http.post("/v1/tickets", json={"pool": "small"}, headers=auth(token))
    assert response.status_code == 201, response.text
    ticket_id: str = response.json()["id"]
    return ticket_id


async def test_pages_need_a_session_and_login_sets_a_strict_httponly_cookie(
    http: httpx.AsyncClient,
) -> None:
    page = await http.get("/ui/pools")
    assert page.status_code == 303
    assert page.headers["location"].startswith("/ui/login?next=")
    wrong = await _login(http, "not-a-token")
    assert wrong.status_code == 401 and "not valid" in wrong.text
    assert "set-cookie" not in wrong.headers
    ok = await _login(http, ALICE_TOKEN)
    assert ok.status_code == 303 and ok.headers["location"] == "/ui/tickets"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
    assert ALICE_TOKEN.lower() not in cookie  # a session id, never the token
    assert (await http.get("/ui/pools")).status_code == 200
    await http.post("/ui/logout")
    assert (await http.get("/ui/pools")).status_code == 303


async def test_a_user_sees_pools_and_its_own_tickets_only(http: httpx.AsyncClient) -> None:
    bobs = await _ticket(http, BOB_TOKEN)
    alices = await _ticket(http, ALICE_TOKEN)
    await _login(http, ALICE_TOKEN)
    tickets = await http.get("/ui/tickets")
    assert alices in tickets.text and bobs not in tickets.text
    pools = await http.get("/ui/pools")
    assert 'data-pool="small"' in pools.text
    for admin_page in ("/ui/vms", "/ui/tasks", "/ui/locks"):
        refused = await http.get(admin_page)
        assert refused.status_code == 403, admin_page
        assert "admin" in refused.text
    await _login(http, ADMIN_TOKEN)
    every = await http.get("/ui/tickets")
    assert alices in every.text and bobs in every.text


async def test_terminate_asks_first_and_refuses_another_site(
    http: httpx.AsyncClient, controller: Any
) -> None:
    await _login(http, ADMIN_TOKEN)
    vm = await _ready_vm(controller)
    confirm = await http.get(f"/ui/vms/{vm}/terminate")
    assert confirm.status_code == 200 and f"Terminate VM {vm}?" in confirm.text
    unconfirmed = await http.post(f"/ui/vms/{vm}/terminate", data={})
    assert unconfirmed.status_code == 422
    cross = await http.post(
        f"/ui/vms/{vm}/terminate",
        data={"confirm": vm},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross.status_code == 403
    assert (await controller.get_vm(vm)).state.value == "ready"  # nothing changed so far
    done = await http.post(f"/ui/vms/{vm}/terminate", data={"confirm": vm})
    assert done.status_code == 303
    assert (await controller.get_vm(vm)).state.value in {"terminating", "terminated"}


async def _ready_vm(controller: Any) -> str:
    async with asyncio.timeout(30):
        while True:
            ready = await controller.list_vms(pool="small", state="ready")
            if ready:
                name: str = ready[0].name
                return name
            await asyncio.sleep(0.02)


async def test_vm_filters_and_bad_filters(http: httpx.AsyncClient, controller: Any) -> None:
    await _login(http, ADMIN_TOKEN)
    vm = await _ready_vm(controller)
    assert vm in (await http.get("/ui/vms", params={"pool": "small", "state": "ready"})).text
    assert vm not in (await http.get("/ui/vms", params={"state": "in_use"})).text
    bad = await http.get("/ui/vms", params={"state": "melted"})
    assert bad.status_code == 422 and "melted" in bad.text
    assert (await http.get("/ui/vms", params={"pool": "nope"})).status_code == 404
    fragment = await http.get("/ui/vms", headers={"X-Fragment": "1"})
    assert fragment.text.lstrip().startswith("<h1>VMs</h1>")  # only <main>, for live updates


async def test_docs_load_nothing_from_the_internet(http: httpx.AsyncClient) -> None:
    docs = await http.get("/docs")
    assert docs.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', docs.text)
    assert assets and all(a.startswith("/docs/assets/") for a in assets), assets
    for asset in assets:
        assert (await http.get(asset)).status_code == 200, asset
    page = await http.get("/ui/login")
    assert "http://" not in page.text and "https://" not in page.text


def test_sessions_expire() -> None:
    now = [1000.0]
    sessions = Sessions(clock=lambda: now[0])
    sid = sessions.open(object())  # type: ignore[arg-type]
    assert sessions.get(sid) is not None
    now[0] += 13 * 3600
    assert sessions.get(sid) is None
    assert sessions.get("forged") is None


def test_state_bar_is_proportional_and_labelled() -> None:
    svg = charts.state_bar({"ready": 3, "in_use": 1}, width=400)
    assert 'aria-label="3 ready, 1 in_use"' in svg
    widths = [float(w) for w in re.findall(r'<rect x="[^"]+" width="([^"]+)"', svg)]
    assert widths == [300.0, 100.0]
    assert "no VMs" in charts.state_bar({})


def test_histogram_counts_every_value() -> None:
    svg = charts.histogram([1.0, 1.1, 5.0, 9.0], bins=4)
    counts = [int(n) for n in re.findall(r"<title>(\d+) between", svg)]
    assert counts == [2, 0, 1, 1]  # bins of 2 s from 1 s: 1-3, 3-5, 5-7, 7-9


def test_charts_show_their_axis_ends() -> None:
    """Catches a histogram or chart whose range is only in tooltips and the screen reader's
    label: a person at the wall must read "1.0 s ... 9.0 s" without hovering."""
    hist = charts.histogram([1.0, 1.1, 5.0, 9.0], bins=4)
    assert re.search(r'<p class="axis"[^>]*><span>1\.0 s</span><span>9\.0 s · 4 spawns', hist)
    fast = charts.histogram([0.012, 0.034])
    assert "<span>0.01 s</span><span>0.03 s · 2 spawns" in fast  # not "0.0 s" at both ends
    chart = charts.line_chart([(0.0, {"ready": 2}), (60.0, {"ready": 5})], span=3600)
    assert re.search(r"<span>60 min ago</span><span>now · at most 5 VMs</span>", chart)


async def test_the_access_log_has_a_line_per_request_and_no_token(
    http: httpx.AsyncClient, caplog: Any
) -> None:
    import logging

    caplog.set_level(logging.INFO, logger="corral.access")
    await http.get("/v1/pools", headers=auth(ADMIN_TOKEN))
    await http.get("/v1/pools", headers=auth("wrong-token"))
    lines = [r.getMessage() for r in caplog.records if r.name == "corral.access"]
    assert [line.split()[:3] for line in lines] == [
        ["GET", "/v1/pools", "200"],
        ["GET", "/v1/pools", "401"],
    ]
    assert not any(ADMIN_TOKEN in line or "wrong-token" in line for line in lines)


async def test_pool_counts_link_to_those_vms_for_an_admin_only(
    http: httpx.AsyncClient, controller: Any
) -> None:
    """Catches the Pools page losing the way from a count (say an unhealthy pool's failed VMs)
    to the VMs themselves, or showing a user links to the admin-only VMs page."""
    await _ready_vm(controller)
    link = 'href="/ui/vms?pool=small&amp;state=ready"'
    await _login(http, ADMIN_TOKEN)
    assert link in (await http.get("/ui/pools")).text
    await _login(http, ALICE_TOKEN)
    assert link not in (await http.get("/ui/pools")).text
