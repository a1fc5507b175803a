"""Both clients drive the flows' pauses: a long-poll that meets a stopping, then unreachable,
server is asked again after a backoff (issue 8, item 8). The server is an httpx mock."""

from __future__ import annotations

import asyncio
import json

import httpx

from corral.client import AsyncClient, Client

TICKET = {"id": "t1", "owner": "alice", "state": "assigned", "vm": "vm-1", "ttl": 60.0}


class Restarting:
    """Answers the first long-poll 503 ``server_stopping``, refuses the next connection, then
    answers the ticket assigned."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.url.path)
        if len(self.calls) == 1:
            body = {"error": {"code": "server_stopping", "message": "stopping"}}
            return httpx.Response(503, content=json.dumps(body), headers={"Retry-After": "1"})
        if len(self.calls) == 2:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(200, json=TICKET)


def test_sync_client_waits_across_a_restart() -> None:
    """Fails if the client does not retry: ServerStopping is raised to the caller."""
    server = Restarting()
    http = httpx.Client(base_url="http://corral.test", transport=httpx.MockTransport(server))
    with Client("http://corral.test", http=http) as client:
        ticket = client.wait_ticket("t1", timeout=60)
    assert ticket.vm == "vm-1"
    assert server.calls == ["/v1/tickets/t1"] * 3, "the same ticket asked about each time"


def test_async_client_waits_across_a_restart() -> None:
    server = Restarting()

    async def main() -> str | None:
        transport = httpx.MockTransport(server)
        http = httpx.AsyncClient(base_url="http://corral.test", transport=transport)
        async with AsyncClient("http://corral.test", http=http) as client:
            return (await client.wait_ticket("t1", timeout=60)).vm

    assert asyncio.run(main()) == "vm-1"
    assert server.calls == ["/v1/tickets/t1"] * 3
