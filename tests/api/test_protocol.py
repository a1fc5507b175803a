"""The HTTP protocols' limits on the wire, on both parsers (issue 8 item 12, issue 14).

``corral serve`` runs uvicorn on httptools when it is installed and on h11 otherwise; each runs
with corral's head deadline and 431 (:mod:`corral.api.protocol`). Every test here runs on both,
against a real server through a raw socket (tests/api/test_hostile.py's wire tests do too).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import select
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from apitools import ALICE_TOKEN, auth, controller_class, make_config

from corral.api import protocol, server
from corral.api.httptools_protocol import LimitedHttpToolsProtocol
from corral.api.server import BackgroundServer

PARSERS = ["h11", "httptools"]


@pytest.fixture(scope="module", params=PARSERS)
def wire(request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    """A real server on one parser, with a short head deadline (the tests wait far longer)."""
    with BackgroundServer(
        make_config(),
        factory=controller_class().create,
        header_timeout=0.5,
        parser=request.param,
    ) as running:
        yield running


def _connect(running: BackgroundServer) -> socket.socket:
    host, port = running.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=20)


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes (or resets) the connection."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def _responses(data: bytes) -> list[tuple[int, Any]]:
    """The status and JSON body of each response in ``data`` (content-length framed)."""
    found = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = int(headers.get("content-length", "0"))
        body, data = rest[:length], rest[length:]
        found.append((int(lines[0].split(" ", 2)[1]), json.loads(body) if body else None))
    return found


def _refused_431(data: bytes) -> None:
    [(status, body)] = _responses(data)
    assert status == 431
    assert body["error"]["code"] == "headers_too_large"
    assert str(protocol.MAX_HEADER_BYTES) in body["error"]["message"]


def test_the_parser_is_httptools_when_installed() -> None:
    """``auto`` picks httptools (installed with corral), ``h11`` forces h11."""
    assert issubclass(protocol.limited(1.0), LimitedHttpToolsProtocol)
    assert issubclass(protocol.limited(1.0, "h11"), protocol.LimitedH11Protocol)
    assert protocol.limited(2.5, "httptools").header_timeout == 2.5


def test_head_over_the_limit_in_one_piece(wire: BackgroundServer) -> None:
    """Many small headers, all sent at once, together over the limit: 431 with corral's JSON."""
    lines = [f"x-filler-{i}: {'v' * 100}" for i in range(protocol.MAX_HEADER_BYTES // 100)]
    head = "GET /healthz HTTP/1.1\r\nhost: corral.test\r\n" + "\r\n".join(lines) + "\r\n\r\n"
    with _connect(wire) as sock:
        try:
            sock.sendall(head.encode())
        except OSError:
            pass  # the server may answer and close before reading everything
        _refused_431(_read_all(sock))


def test_target_over_the_limit(wire: BackgroundServer) -> None:
    """A request target longer than the limit is refused the same way."""
    target = "/healthz?" + "a" * (protocol.MAX_HEADER_BYTES + 10)
    with _connect(wire) as sock:
        try:
            sock.sendall(f"GET {target} HTTP/1.1\r\nhost: corral.test\r\n\r\n".encode())
        except OSError:
            pass
        _refused_431(_read_all(sock))


def test_header_line_that_never_ends(wire: BackgroundServer) -> None:
    """A header line that keeps growing and is never finished is refused once it passes the
    limit, before the head's deadline. Fails when only complete header lines are counted
    (httptools buffers an unfinished line whole): the connection is then merely closed at the
    deadline, with no answer."""
    with _connect(wire) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: corral.test\r\nx-big: ")
        piece = b"a" * 8192
        try:
            for _ in range(2 * protocol.MAX_HEADER_BYTES // len(piece)):
                sock.sendall(piece)
                if select.select([sock], [], [], 0.05)[0]:
                    break  # answered: stop sending, so that the close is not a reset
        except OSError:
            pass
        _refused_431(_read_all(sock))


def test_head_under_the_limit_is_served(wire: BackgroundServer) -> None:
    """A large head within the limit, in small pieces, is answered normally."""
    lines = [f"x-filler-{i}: {'v' * 100}" for i in range(protocol.MAX_HEADER_BYTES // 200)]
    head = "GET /healthz HTTP/1.1\r\nhost: corral.test\r\nconnection: close\r\n"
    data = (head + "\r\n".join(lines) + "\r\n\r\n").encode()
    with _connect(wire) as sock:
        for start in range(0, len(data), 1000):
            sock.sendall(data[start : start + 1000])
        [(status, body)] = _responses(_read_all(sock))
    assert (status, body["status"]) == (200, "ok")


def test_pipelined_requests(wire: BackgroundServer) -> None:
    """Two requests in one write are both answered, in order."""
    first = b"GET /healthz HTTP/1.1\r\nhost: corral.test\r\n\r\n"
    second = b"GET /readyz HTTP/1.1\r\nhost: corral.test\r\nconnection: close\r\n\r\n"
    with _connect(wire) as sock:
        sock.sendall(first + second)
        statuses = [status for status, _ in _responses(_read_all(sock))]
    assert statuses == [200, 200]


def test_slow_head_is_closed_silent_connection_too(wire: BackgroundServer) -> None:
    """A partial head, and a connection that never sends, are closed after the deadline."""
    with _connect(wire) as silent, _connect(wire) as partial:
        partial.sendall(b"GET /healthz HTTP/1.1\r\nhost: corral.test\r\n")
        assert _read_all(partial) == b""
        assert _read_all(silent) == b""


def test_second_request_head_has_a_deadline(wire: BackgroundServer) -> None:
    """After a first request is answered, a second one's partial head is closed too."""
    with _connect(wire) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: corral.test\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: corr")
        assert _read_all(sock) == b""


def test_a_long_poll_outlives_the_head_deadline(wire: BackgroundServer) -> None:
    """A request answered later than the head deadline (a long-poll) is not cut off by it."""
    with httpx.Client(base_url=wire.url, headers=auth(ALICE_TOKEN), timeout=20) as http:
        held = http.post("/v1/tickets", json={"pool": "tiny"}, params={"wait": 10}).json()
        assert held["state"] == "assigned"
        waiting = http.post("/v1/tickets", json={"pool": "tiny"}).json()
        started = time.monotonic()
        polled = http.get(f"/v1/tickets/{waiting['id']}", params={"wait": 1.5})
        assert polled.status_code == 200
        assert polled.json()["state"] == "waiting"
        assert time.monotonic() - started >= 1.0  # it was really held past 0.5 s
        for ticket in (held, waiting):
            http.post(f"/v1/tickets/{ticket['id']}/close")


def test_the_server_loop_is_uvloop_when_installed() -> None:
    """``corral serve`` runs on uvloop when it is importable."""
    uvloop = pytest.importorskip("uvloop")

    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    assert issubclass(server.run(loop_type()), uvloop.Loop)


def test_the_server_loop_falls_back_to_asyncio(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without uvloop (Windows), asyncio's default loop runs the server."""
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError

    async def loop_type() -> type[asyncio.AbstractEventLoop]:
        return type(asyncio.get_running_loop())

    with contextlib.closing(asyncio.new_event_loop()) as default:
        assert server.run(loop_type()) is type(default)
