"""Leases (issue 8, item 2) and a stopping server's long-polls (item 8), in process.

The owner's calls that name a ticket renew its lease (a long-poll included, for as long as it
lasts); listings and an admin's reads of another owner's ticket do not. The controller runs on a
manual wall clock here, so lease arithmetic is exact and expiry happens only when the test says.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth, controller_class, make_config

from corral.api import create_app
from corral.api.routes import renewal_due
from corral.pools.model import Ticket, TicketState

ALICE = auth(ALICE_TOKEN)
ADMIN = auth(ADMIN_TOKEN)


class Clock:
    """A wall clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


@pytest.fixture
async def served(clock: Clock) -> AsyncIterator[tuple[Any, Any, httpx.AsyncClient]]:
    """(controller, app, client) on a controller driven by ``clock``."""
    config = make_config()
    ctl: Any = await controller_class().create(config, clock=clock)
    await ctl.start()
    try:
        app = create_app(ctl, config)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            yield ctl, app, http
    finally:
        await ctl.stop()


async def _waiting_ticket(http: httpx.AsyncClient, ttl: float) -> dict[str, Any]:
    """Alice takes pool tiny's only VM, then asks for another: that one waits."""
    held = await http.post("/v1/tickets", json={"pool": "tiny"}, params={"wait": 10}, headers=ALICE)
    assert held.json()["state"] == "assigned", held.text
    waiting = await http.post("/v1/tickets", json={"pool": "tiny", "ttl": ttl}, headers=ALICE)
    assert waiting.json()["state"] == "waiting"
    return dict(waiting.json())


async def _expires_at(http: httpx.AsyncClient, ticket_id: str) -> float:
    listed = (await http.get("/v1/tickets", headers=ADMIN)).json()
    return float(next(t["expires_at"] for t in listed if t["id"] == ticket_id))


async def test_owner_reads_renew_admin_reads_and_listings_do_not(
    served: tuple[Any, Any, httpx.AsyncClient], clock: Clock
) -> None:
    """Fails without the renewal on the owner's GET: the waiting ticket expires while its
    owner keeps asking about it."""
    ctl, _, http = served
    ticket = await _waiting_ticket(http, ttl=60)
    assert ticket["expires_at"] == 1060.0
    clock.now = 1050.0
    await http.get(f"/v1/tickets/{ticket['id']}", headers=ADMIN)  # an admin's read
    await http.get("/v1/tickets", headers=ALICE)  # a listing
    assert await _expires_at(http, ticket["id"]) == 1060.0, "only the owner's calls renew"
    mine = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert mine.json()["expires_at"] == 1110.0, "the answer carries the renewed expiry"
    clock.now = 1100.0
    await ctl.maintenance.run_once(wait=True)
    after = await http.get(f"/v1/tickets/{ticket['id']}", headers=ADMIN)
    assert after.json()["state"] == "waiting", "renewed by its owner's read, not expired"
    clock.now = 1200.0
    await ctl.maintenance.run_once(wait=True)
    lapsed = await http.get(f"/v1/tickets/{ticket['id']}", headers=ADMIN)
    assert lapsed.json()["state"] == "expired", "without the owner's calls the lease lapses"
    late = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert late.json()["state"] == "expired", "an ended ticket is not revived by a read"


async def test_a_renewal_gaining_less_than_the_slack_is_skipped(
    served: tuple[Any, Any, httpx.AsyncClient], clock: Clock
) -> None:
    """The owner's read right after the create writes nothing (the lease was just set: the
    write would gain less than min(30 s, ttl / 100)); a read past the slack renews. Fails
    without the skip (the first read moves the expiry to 1060.5) and when the skip ignores
    the slack's bound (the second read keeps 1060.0)."""
    _, _, http = served
    ticket = await _waiting_ticket(http, ttl=60)  # slack: 0.6 s
    clock.now = 1000.5
    first = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert first.json()["expires_at"] == 1060.0, "a renewal gaining 0.5 s is skipped"
    assert await _expires_at(http, ticket["id"]) == 1060.0
    clock.now = 1000.7
    second = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert second.json()["expires_at"] == 1060.7, "a renewal gaining 0.7 s is written"
    assert await _expires_at(http, ticket["id"]) == 1060.7


async def test_long_poll_renews_while_it_waits(
    served: tuple[Any, Any, httpx.AsyncClient], clock: Clock
) -> None:
    """A long-poll lasting longer than a third of the lease renews during the wait (ttl 3 s:
    every second). Fails when only the start of the long-poll renews."""
    _, _, http = served
    clock.now = 999.0
    ticket = await _waiting_ticket(http, ttl=3)
    clock.now = 1000.0
    poll = asyncio.ensure_future(
        http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 2.5}, headers=ALICE)
    )
    deadline = time.monotonic() + 10
    while await _expires_at(http, ticket["id"]) != 1003.0:  # the renewal at its start
        assert time.monotonic() < deadline, "the long-poll did not renew when it started"
        await asyncio.sleep(0.01)
    clock.now = 1002.0
    answer = (await poll).json()
    assert answer["state"] == "waiting"
    assert answer["expires_at"] == 1005.0, "renewed during the wait"


async def test_stopping_server_answers_long_polls_and_keeps_tickets(
    served: tuple[Any, Any, httpx.AsyncClient],
) -> None:
    """Fails without the stopping event: the long-poll is cut off by the shutdown (500, or a
    cancelled handler), and the create's ticket is cancelled."""
    _, app, http = served
    ticket = await _waiting_ticket(http, ttl=600)
    poll = asyncio.ensure_future(
        http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 60}, headers=ALICE)
    )
    create = asyncio.ensure_future(
        http.post("/v1/tickets", json={"pool": "tiny"}, params={"wait": 60}, headers=ALICE)
    )
    deadline = time.monotonic() + 10
    while (
        len((await http.get("/v1/tickets", params={"state": "waiting"}, headers=ADMIN)).json()) < 2
    ):
        assert time.monotonic() < deadline, "the second waiting ticket was never created"
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let both requests reach their wait
    app.state.corral.stopping.set()
    polled, created = await asyncio.wait_for(asyncio.gather(poll, create), 10)
    assert polled.status_code == 503
    assert polled.json()["error"]["code"] == "server_stopping"
    assert polled.headers["retry-after"]
    assert created.status_code == 201, "the creator learns its ticket's id"
    assert created.json()["state"] == "waiting"
    waiting = (await http.get("/v1/tickets", params={"state": "waiting"}, headers=ADMIN)).json()
    assert {t["id"] for t in waiting} == {ticket["id"], created.json()["id"]}, "none cancelled"
    again = await http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 30}, headers=ALICE)
    assert again.status_code == 503, "a long-poll on a stopping server answers at once"
    plain = await http.get(f"/v1/tickets/{ticket['id']}", headers=ALICE)
    assert plain.status_code == 200, "other calls are still served while connections drain"


def test_the_renewal_slack_is_a_hundredth_of_the_ttl_at_most_30_s() -> None:
    """Fails when the slack is not capped (36 s for a 1-hour lease) or not a hundredth of a
    short ttl (a 60 s lease renewed after 0.7 s)."""
    hour = Ticket(
        id="t",
        owner="o",
        state=TicketState.WAITING,
        created_at=1000.0,
        expires_at=4600.0,
        pool="p",
        ttl=3600.0,
    )
    assert not renewal_due(hour, 1029.0)
    assert renewal_due(hour, 1031.0)
    minute = replace(hour, expires_at=1060.0, ttl=60.0)
    assert not renewal_due(minute, 1000.5)
    assert renewal_due(minute, 1000.7)
    assert not renewal_due(replace(hour, ttl=None, expires_at=None), 9999.0)
