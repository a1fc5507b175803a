"""Reading ``GET /v1/events`` from the clients (issue 12): the SSE decoder, the reconnect with
``Last-Event-ID``, and a real server's stream.

What each test catches: a decoder that splits an event on its ``data`` lines or takes the
keep-alive comment for an event; a reconnect that forgets ``Last-Event-ID`` (events missed
silently) or takes the stream's own ``dropped`` event id (0) as the last one seen; a client that
does not reconnect at all; an error answer (bad token) swallowed instead of raised; the async
client drifting from the sync one; a stream that never shows a ticket created through the API.
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.client import AsyncClient, Client, sse

FIRST = (
    b": keep-alive\n\n"
    b'id: 41\nevent: ticket\ndata: {"kind":"ticket","id":"t1","state":"waiting",'
    b'"at":1.0,"data":{"pool":"p"},"owner":"alice"}\n\n'
    b'id: 42\nevent: vm\ndata: {"kind":"vm","id":"p-1","state":"ready","at":2.0,'
    b'"data":{"pool":"p"}}\n\n'
    b'id: 0\nevent: dropped\ndata: {"reason":"too slow"}\n\n'
)
BAD_TOKEN = "not-a-token"  # noqa: S105 - test token
SECOND = b'id: 50\nevent: resync\ndata: {"reason":"event 42 is no longer kept"}\n\n'


def test_decoder_events_comments_and_multiline_data() -> None:
    decoder = sse.Decoder()
    lines = [": keep-alive", "", "id: 7", "event: pool", 'data: {"a":', "data: 1}", "", "x"]
    events = [e for e in map(decoder.feed, lines) if e is not None]
    assert events == [sse.ServerEvent(7, "pool", {"a": 1})]
    assert decoder.feed("data: plain text") is None
    assert decoder.feed("") == sse.ServerEvent(None, "message", "plain text")


def test_resume_refuses_bad_input_and_backs_off() -> None:
    with pytest.raises(exceptions.InvalidInput, match="kinds"):
        sse.Resume(kinds=("tickets",))
    with pytest.raises(exceptions.InvalidInput, match="last_id"):
        sse.Resume(last_id=-1)
    resume = sse.Resume(kinds=("ticket", "pool"))
    assert resume.params() == {"kinds": "ticket,pool"}
    assert "Last-Event-ID" not in resume.headers({})
    assert [resume.backoff() for _ in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    resume.seen(sse.ServerEvent(3, "vm", {}))
    assert resume.failures == 0 and resume.headers({})["Last-Event-ID"] == "3"


class Stream:
    """Serves FIRST, then (expecting ``Last-Event-ID: 42``) SECOND, then refuses."""

    def __init__(self) -> None:
        self.last_ids: list[str | None] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.last_ids.append(request.headers.get("Last-Event-ID"))
        assert request.url.params.get("kinds") == "ticket,vm"
        if len(self.last_ids) == 1:
            return httpx.Response(200, content=FIRST)
        if len(self.last_ids) == 2:
            return httpx.Response(200, content=SECOND)
        raise httpx.ConnectError("refused", request=request)


def test_sync_client_reconnects_with_the_last_event_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sse, "RETRY", 0.001)
    server = Stream()
    http = httpx.Client(base_url="http://corral.test", transport=httpx.MockTransport(server))
    with Client("http://corral.test", http=http) as client:
        stream = client.events(kinds=["ticket", "vm"])
        got = [next(stream) for _ in range(4)]
        stream.close()
    assert [(e.id, e.event) for e in got] == [
        (41, "ticket"),
        (42, "vm"),
        (None, "dropped"),
        (50, "resync"),
    ]
    assert got[0].object_id == "t1" and got[0].pool == "p" and got[1].state == "ready"
    assert got[2].reason == "too slow"
    assert server.last_ids == [None, "42"]


def test_async_client_reconnects_with_the_last_event_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "RETRY", 0.001)
    server = Stream()

    async def main() -> list[sse.ServerEvent]:
        http = httpx.AsyncClient(
            base_url="http://corral.test", transport=httpx.MockTransport(server)
        )
        async with AsyncClient("http://corral.test", http=http) as client:
            got = []
            async for event in client.events(kinds=["ticket", "vm"]):
                got.append(event)
                if len(got) == 4:
                    break
            return got

    got = asyncio.run(main())
    assert [e.id for e in got] == [41, 42, None, 50]
    assert server.last_ids == [None, "42"]


def test_without_reconnect_the_first_break_ends_or_raises() -> None:
    server = Stream()
    http = httpx.Client(base_url="http://corral.test", transport=httpx.MockTransport(server))
    with Client("http://corral.test", http=http) as client:
        assert len(list(client.events(kinds=["ticket", "vm"], reconnect=False))) == 3
    refused = httpx.MockTransport(lambda r: (_ for _ in ()).throw(httpx.ConnectError("no")))
    http = httpx.Client(base_url="http://corral.test", transport=refused)
    with (
        Client("http://corral.test", http=http) as client,
        pytest.raises(exceptions.ServerUnreachable),
    ):
        next(client.events(reconnect=False))


def test_real_stream_shows_tickets_and_refuses_a_bad_token(server: BackgroundServer) -> None:
    with (
        Client(server.url, token=BAD_TOKEN) as client,
        pytest.raises(exceptions.Unauthorized),
    ):
        next(client.events())
    created: list[str] = []
    stop = threading.Event()

    def churn() -> None:  # until the stream has shown one of them
        with Client(server.url, token=ALICE_TOKEN) as alice:
            while not stop.wait(0.05):
                ticket = alice.create_ticket(pool="other")
                created.append(ticket.id)
                alice.close_ticket(ticket.id)

    worker = threading.Thread(target=churn)
    deadline = time.monotonic() + 20
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        stream = admin.events(kinds=["ticket"])
        worker.start()
        try:
            for event in stream:
                assert event.event == "ticket"
                if event.object_id in created:
                    assert isinstance(event.data, dict) and event.data["owner"] == "alice"
                    break
                assert time.monotonic() < deadline, "no ticket event within 20 s"
        finally:
            stop.set()
            worker.join()
            stream.close()  # type: ignore[attr-defined]
