"""An acquire interrupted before its ticket is assigned leaves no open ticket (SPEC §5's leak).

Pool ``tiny`` has one VM: while a first acquire holds it, the next one waits, and is interrupted
in every way a caller can: Ctrl-C while the create is in flight (sync), cancellation (async), the
client vanishing mid-request (server side).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN

from corral.api.server import BackgroundServer
from corral.client import AsyncClient, Client, models


def _open(url: str) -> list[models.Ticket]:
    with Client(url, token=ADMIN_TOKEN) as admin:
        return [t for t in admin.list_tickets() if t.state in {"waiting", "assigned"}]


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        time.sleep(0.02)


@pytest.fixture
def held(server: BackgroundServer) -> Iterator[models.Ticket]:
    """Alice holds pool tiny's only VM for the test."""
    with Client(server.url, token=ALICE_TOKEN) as alice:
        with alice.acquire(pool="tiny", timeout=10) as ticket:
            yield ticket
    _wait_until(lambda: _open(server.url) == [], "every ticket closed after the test")


class CtrlCWhileCreating(httpx.BaseTransport):
    """Sends the create to the server from a thread and, once the server holds the new ticket,
    raises KeyboardInterrupt as Ctrl-C would: the client never sees the create's answer, and the
    server does not see it leave either (the connection stays open)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.inner = httpx.HTTPTransport()
        self.thread: threading.Thread | None = None

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.method != "POST" or request.url.path != "/v1/tickets":
            return self.inner.handle_request(request)
        before = len(_open(self.url))
        request.read()
        self.thread = threading.Thread(target=self._send, args=(request,), daemon=True)
        self.thread.start()
        _wait_until(lambda: len(_open(self.url)) > before, "the server created the ticket")
        raise KeyboardInterrupt

    def close(self) -> None:
        self.inner.close()

    def _send(self, request: httpx.Request) -> None:
        with httpx.Client(timeout=60) as http:
            http.send(request)


def test_ctrl_c_during_create_leaves_no_open_ticket(
    server: BackgroundServer, held: models.Ticket
) -> None:
    transport = CtrlCWhileCreating(server.url)
    http = httpx.Client(base_url=server.url, transport=transport)
    with Client(server.url, token=ALICE_TOKEN, http=http) as alice:
        with pytest.raises(KeyboardInterrupt):
            with alice.acquire(pool="tiny", timeout=20):
                raise AssertionError("no VM should be free")
    assert [t.id for t in _open(server.url)] == [held.id]
    assert transport.thread is not None
    transport.thread.join(10)  # its long-poll ends: the ticket was cancelled
    assert not transport.thread.is_alive()


async def _cancel_acquire_while_waiting(alice: AsyncClient) -> None:
    async def second() -> None:
        async with alice.acquire(pool="tiny", timeout=20):
            raise AssertionError("no VM should be free")

    job = asyncio.create_task(second())
    deadline = time.monotonic() + 10
    while len(await alice.list_tickets(state="waiting")) == 0:
        assert time.monotonic() < deadline, "the second ticket was never created"
        await asyncio.sleep(0.02)
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job


def test_async_acquire_cancelled_before_assignment_leaves_no_open_ticket(
    server: BackgroundServer, held: models.Ticket
) -> None:
    async def main() -> None:
        async with AsyncClient(server.url, token=ALICE_TOKEN) as alice:
            await _cancel_acquire_while_waiting(alice)

    asyncio.run(main())
    assert [t.id for t in _open(server.url)] == [held.id]


async def test_async_acquire_cancelled_in_process(asgi: httpx.AsyncClient) -> None:
    async with AsyncClient(token=ALICE_TOKEN, http=asgi) as alice:
        async with alice.acquire(pool="tiny", timeout=10) as first:
            await _cancel_acquire_while_waiting(alice)
            tickets = await alice.list_tickets()
            assert [t.id for t in tickets if t.state in {"waiting", "assigned"}] == [first.id]


def test_server_closes_a_create_whose_client_went_away(
    server: BackgroundServer, held: models.Ticket
) -> None:
    async def vanish() -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:
            headers: Any = {"Authorization": f"Bearer {ALICE_TOKEN}"}
            body = {"pool": "tiny"}
            post = asyncio.create_task(
                http.post("/v1/tickets", json=body, params={"wait": 20}, headers=headers)
            )
            deadline = time.monotonic() + 10
            while len(await asyncio.to_thread(_open, server.url)) < 2:
                assert time.monotonic() < deadline, "the ticket was never created"
                await asyncio.sleep(0.02)
            post.cancel()  # no key, no answer read: only the server can close it
            await asyncio.gather(post, return_exceptions=True)

    asyncio.run(vanish())
    _wait_until(lambda: [t.id for t in _open(server.url)] == [held.id], "abandoned ticket closed")
