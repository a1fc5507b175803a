"""A long-poll's ``wait`` counts from the request's arrival (issue 8 item 3).

Under load the reads and writes a request makes before it waits (reading the ticket, renewing its
lease) queue behind other requests' work; 1,000 waiters were answered seconds after their
``wait`` because each wait started only after that queue. No timing is asserted here: the test
makes the read before the wait outlast the wait, and checks the request then does not wait again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apitools import ALICE_TOKEN, auth, controller_class, make_config

from corral.api import create_app

ALICE = auth(ALICE_TOKEN)
WAIT = 0.2


@pytest.fixture
async def served() -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    config = make_config()
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            yield ctl, http
    finally:
        await ctl.stop()


async def _waiting_ticket(http: httpx.AsyncClient) -> str:
    held = await http.post("/v1/tickets", json={"pool": "tiny"}, params={"wait": 10}, headers=ALICE)
    assert held.json()["state"] == "assigned", held.text
    waiting = await http.post("/v1/tickets", json={"pool": "tiny"}, headers=ALICE)
    assert waiting.json()["state"] == "waiting"
    return str(waiting.json()["id"])


async def test_a_wait_used_up_before_waiting_is_not_waited_again(
    served: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when the long-poll's deadline is taken after the ticket's read and renewal (the
    request then waits its whole ``wait`` once more: answered late by the time it queued)."""
    ctl, http = served
    ticket_id = await _waiting_ticket(http)
    loop = asyncio.get_running_loop()
    read = ctl.get_ticket
    waits: list[float | None] = []
    wait_ticket = ctl.wait_ticket

    async def slow_read(tid: str, /) -> Any:
        until = loop.time() + WAIT * 1.5  # the read queues for longer than the whole wait
        while loop.time() < until:
            await asyncio.sleep(0.01)
        return await read(tid)

    async def counted_wait(tid: str, /, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return await wait_ticket(tid, timeout=timeout)

    monkeypatch.setattr(ctl, "get_ticket", slow_read)
    monkeypatch.setattr(ctl, "wait_ticket", counted_wait)
    answer = await http.get(f"/v1/tickets/{ticket_id}", params={"wait": WAIT}, headers=ALICE)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "waiting"
    assert waits == [], f"waited again after the wait was used up: {waits}"


async def test_a_wait_partly_used_waits_only_the_rest(
    served: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fails when the deadline restarts after the read: the wait asked of the controller is then
    the whole ``wait`` rather than what is left of it."""
    ctl, http = served
    ticket_id = await _waiting_ticket(http)
    loop = asyncio.get_running_loop()
    read = ctl.get_ticket
    waits: list[float | None] = []
    wait_ticket = ctl.wait_ticket

    async def slow_read(tid: str, /) -> Any:
        until = loop.time() + 0.5  # half of the wait below
        while loop.time() < until:
            await asyncio.sleep(0.01)
        return await read(tid)

    async def counted_wait(tid: str, /, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return await wait_ticket(tid, timeout=timeout)

    monkeypatch.setattr(ctl, "get_ticket", slow_read)
    monkeypatch.setattr(ctl, "wait_ticket", counted_wait)
    answer = await http.get(f"/v1/tickets/{ticket_id}", params={"wait": 1.0}, headers=ALICE)
    assert answer.json()["state"] == "waiting"
    assert waits and all(w is not None and w <= 0.5 for w in waits), waits


async def test_the_wait_counts_from_the_arrival_at_the_guard(
    served: tuple[Any, httpx.AsyncClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A create whose body arrives slowly (the guard reads it before the route runs) has used up
    its ``wait`` by the time the route starts: it is answered at once, not after waiting again.
    Fails when the deadline counts from the route's start (it then waits its whole ``wait``)."""
    ctl, http = served
    await _waiting_ticket(http)  # pool tiny's only VM is taken: a new ticket waits
    loop = asyncio.get_running_loop()
    waits: list[float | None] = []
    wait_ticket = ctl.wait_ticket

    async def counted_wait(tid: str, /, timeout: float | None = None) -> Any:
        waits.append(timeout)
        return await wait_ticket(tid, timeout=timeout)

    async def slow_body() -> AsyncIterator[bytes]:
        until = loop.time() + WAIT * 1.5  # the body takes longer than the whole wait
        while loop.time() < until:
            await asyncio.sleep(0.01)
        yield b'{"pool": "tiny"}'

    monkeypatch.setattr(ctl, "wait_ticket", counted_wait)
    answer = await http.post(
        "/v1/tickets",
        content=slow_body(),
        params={"wait": WAIT},
        headers={**ALICE, "content-type": "application/json"},
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["state"] == "waiting"
    assert waits == [], f"waited again after the wait was used up: {waits}"
