"""The standard library transport of the ``corral`` command (``corral.client.plainhttp``, issue
14): it must send what httpx sends and fail as httpx fails, so that a command's output and
errors do not depend on which of the two carried it.

Each test names the breakage it catches.
"""

from __future__ import annotations

import io
import json
import select
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.client import Client, plainhttp


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": 5, "all": True, "closed": False, "none": None, "ratio": 1.5},
        {"state": ["open", "assigned"], "owner": "a b=c&d/é+%", "meta": ["k=v", "x y"]},
    ],
)
def test_the_query_is_httpx_s(params: dict[str, object]) -> None:
    """Breakage caught: a query written differently from httpx's (``True`` for ``true``, a list
    sent as its ``repr`` instead of repeated keys, a value not percent-encoded)."""
    assert plainhttp.query(params) == str(httpx.QueryParams(params))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "environ", "usable"),
    [
        ("http://127.0.0.1:8642", {}, True),
        ("HTTP://corral.example/prefix", {"NO_PROXY": "*"}, True),
        ("https://corral.example", {}, False),
        ("http://127.0.0.1:8642", {"HTTP_PROXY": "http://proxy:3128"}, False),
        ("http://127.0.0.1:8642", {"all_proxy": "socks5://proxy"}, False),
        ("http://", {}, False),
        ("http://user:secret@127.0.0.1:8642", {}, False),
    ],
)
def test_only_plain_http_without_a_proxy_is_sent_without_httpx(
    url: str, environ: dict[str, str], usable: bool
) -> None:
    """Breakage caught: a TLS URL sent in clear, a proxy set in the environment bypassed or
    credentials in the URL dropped (httpx would have used them)."""
    assert plainhttp.usable(url, environ) is usable


def test_a_client_on_plainhttp_answers_as_on_httpx(server: BackgroundServer) -> None:
    """Breakage caught: the JSON body, the token's header or the query lost or changed on the
    way (the ticket is not created, is another owner's, or the filtered list differs), or the
    answer read differently from httpx's."""
    plain = Client(server.url, token=ALICE_TOKEN, http=plainhttp.PlainHTTP(server.url))
    through_httpx = httpx.Client(base_url=server.url)
    with plain, Client(server.url, token=ADMIN_TOKEN, http=through_httpx) as reference:
        ticket = plain.create_ticket(pool="small", meta={"job": "a b/é"})
        try:
            assert ticket.owner == reference.get_ticket(ticket.id).owner == "alice"
            found = plain.list_tickets(state=["waiting", "assigned"], meta={"job": "a b/é"})
            assert [t.id for t in found] == [ticket.id]
            assert found == reference.list_tickets(
                state=["waiting", "assigned"], meta={"job": "a b/é"}
            )
            with pytest.raises(exceptions.NotFound):
                plain.get_ticket("no-such-ticket")
        finally:
            plain.close_ticket(ticket.id)


def test_an_unreachable_server_fails_as_through_httpx() -> None:
    """Breakage caught: a refused connection escaping as ``ConnectionRefusedError`` (a
    traceback on the command line) or worded differently from httpx's failure."""
    url = "http://127.0.0.1:9"
    through_httpx = httpx.Client(base_url=url)
    with (
        Client(url, http=plainhttp.PlainHTTP(url)) as plain,
        Client(url, http=through_httpx) as reference,
    ):
        with pytest.raises(exceptions.ServerUnreachable) as through_plain:
            plain.list_tickets()
        with pytest.raises(exceptions.ServerUnreachable) as through_httpx:
            reference.list_tickets()
    assert str(through_plain.value) == str(through_httpx.value)
    assert "cannot reach corral at http://127.0.0.1:9" in str(through_plain.value)


def test_an_answer_too_slow_is_a_timeout() -> None:
    """Breakage caught: a read timeout not reported as the server not answering in time."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts the connection, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, timeout=0.2, http=plainhttp.PlainHTTP(url)) as plain:
            with pytest.raises(exceptions.ServerUnreachable, match=r"no answer within 0\.2 s"):
                plain.list_tickets()


class _Health(BaseHTTPRequestHandler):
    """Answers every GET as ``/healthz`` would, keeping the connection open (HTTP/1.1) unless
    the server's ``close_after`` says to close it once answered, without saying so."""

    protocol_version = "HTTP/1.1"
    server: _Recording

    def do_GET(self) -> None:
        body = json.dumps({"status": "ok", "version": "test"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.peers.append(self.client_address[1])
        self.close_connection = self.server.close_after

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


class _Recording(ThreadingHTTPServer):
    daemon_threads = True
    peers: list[int]
    close_after: bool


@contextmanager
def _recording(close_after: bool) -> Iterator[_Recording]:
    served = _Recording(("127.0.0.1", 0), _Health)
    served.peers, served.close_after = [], close_after
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    try:
        yield served
    finally:
        served.shutdown()
        served.server_close()
        thread.join(10)


def test_a_client_s_requests_share_one_connection() -> None:
    """Breakage caught (mutant ``plainhttp-no-keepalive``): a connection per request, which
    costs the server an accept, a new HTTP parser and a socket per request (issue 14)."""
    with _recording(close_after=False) as served:
        url = f"http://127.0.0.1:{served.server_address[1]}"
        with Client(url) as client:
            for _ in range(3):
                assert client.health().status == "ok"
    assert len(served.peers) == 3
    assert len(set(served.peers)) == 1, served.peers


def test_a_connection_the_server_closed_meanwhile_is_not_reused() -> None:
    """Breakage caught (mutant ``plainhttp-reuse-closed``): a request sent on a kept-alive
    connection the server has closed since (its idle timeout) fails as an unreachable server
    instead of going out on a new connection."""
    with _recording(close_after=True) as served:
        url = f"http://127.0.0.1:{served.server_address[1]}"
        plain = plainhttp.PlainHTTP(url)
        with Client(url, http=plain) as client:
            for _ in range(3):
                assert client.health().status == "ok"
                kept = plain._local.connection  # the connection the next request would reuse
                assert kept is not None and kept.sock is not None
                # Wait for the server's close to arrive (sending before it does is a race no
                # client wins: httpx fails it the same way, "Server disconnected ...").
                readable, _, _ = select.select([kept.sock], [], [], 10)
                assert readable
    assert len(set(served.peers)) == 3, served.peers


def test_an_answer_interrupted_midway_drops_its_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Breakage caught (mutant ``plainhttp-keeps-interrupted``): a request interrupted while
    its answer was being read (Ctrl-C: ``KeyboardInterrupt``, any exception) leaves the
    connection as the thread's, so the next request (the quiet release after Ctrl-C) reads
    the interrupted request's answer instead of its own."""
    with _recording(close_after=False) as served:
        url = f"http://127.0.0.1:{served.server_address[1]}"
        plain = plainhttp.PlainHTTP(url)
        with Client(url, http=plain) as client:
            assert client.health().status == "ok"
            first = plain._local.connection
            real = plainhttp.read

            def interrupted(reader: object, method: str) -> object:
                monkeypatch.setattr(plainhttp, "read", real)
                raise KeyboardInterrupt

            monkeypatch.setattr(plainhttp, "read", interrupted)
            with pytest.raises(KeyboardInterrupt):
                client.health()
            assert plain._local.connection is None
            assert client.health().status == "ok"
            assert plain._local.connection is not first
    assert len(set(served.peers)) == 2, served.peers


def _read(raw: bytes, method: str = "GET") -> tuple[tuple[int, bytes, bool], bytes]:
    """What :func:`plainhttp.read` reads of ``raw``, and what it leaves for the next answer."""
    reader = io.BytesIO(raw)
    return plainhttp.read(reader, method), reader.read()


NEXT = b"HTTP/1.1 204 No Content\r\n\r\n"
"""A second answer on the same connection, which reading the first must leave alone."""


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", False)),
        (b"HTTP/1.1 404 Not Found\r\ncontent-length: 4\r\n\r\nnull", (404, b"null", False)),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n1", (200, b"1", True)),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n1", (200, b"1", True)),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\n[1,\r\n2\r\n 2\r\n1\r\n]\r\n0\r\nTrailer: x\r\n\r\n",
            (200, b"[1, 2]", False),
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            (201, b"", False),
        ),
        (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", False)),
    ],
)
def test_an_answer_is_read_to_its_end_and_no_further(
    raw: bytes, expected: tuple[int, bytes, bool]
) -> None:
    """Breakage caught (mutant ``plainhttp-reads-past-the-body``): a body read past its length
    or its last chunk (the next answer on the kept-alive connection eaten), chunks not
    decoded, an interim 100 taken for the answer, a ``close`` not honoured."""
    assert _read(raw + NEXT) == (expected, NEXT)


def test_an_answer_delimited_by_the_end_of_the_connection() -> None:
    assert _read(b"HTTP/1.1 200 OK\r\n\r\nall of it") == ((200, b"all of it", True), b"")


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (b"", "without sending a response"),
        (b"SSH-2.0-OpenSSH_9.6\r\n", "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "incomplete answer"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "not a header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Le", "connection closed in the headers"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", "closed in a chunk"),
        ("HTTP/1.1 200 OK\r\nContent-Length: 1\u00b2\r\n\r\n1".encode("latin-1"), "Content-Len"),
        ("HTTP/1.1 2\u00b20 OK\r\n\r\n".encode("latin-1"), "not an HTTP/1.x status line"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x1\r\n", "invalid chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1_0\r\n", "invalid chunk size"),
    ],
)
def test_a_broken_answer_is_a_transport_error(raw: bytes, problem: str) -> None:
    """Breakage caught: a truncated or non-HTTP answer read as a (wrong) answer, or escaping
    as a ``ValueError`` traceback instead of an unreachable server."""
    with pytest.raises(plainhttp.TransportError, match=problem):
        plainhttp.read(io.BytesIO(raw), "GET")


def test_a_server_that_answers_garbage_is_unreachable_not_a_traceback() -> None:
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"

        def answer() -> None:
            peer, _ = listener.accept()
            with peer:
                peer.recv(65536)
                peer.sendall(b"garbage\r\n")

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with Client(url, timeout=5) as client, pytest.raises(exceptions.ServerUnreachable):
            client.health()
        thread.join(10)


@pytest.mark.parametrize(
    ("headers", "path"),
    [
        ({"Idempotency-Key": "k\r\nX-Admin: yes"}, "/healthz"),
        ({"Bad Name": "v"}, "/healthz"),
        ({}, "/healthz HTTP/1.1\r\nX-Admin: yes\r\n\r\nGET /x"),
        ({}, "/a b"),
    ],
)
def test_a_header_or_path_that_would_smuggle_a_line_is_refused(
    headers: dict[str, str], path: str
) -> None:
    """Breakage caught: CR/LF or spaces written into the request as given (another header, or
    another request, injected), where http.client and httpx refuse them."""
    plain = plainhttp.PlainHTTP("http://127.0.0.1:9")
    with pytest.raises(ValueError, match="invalid"):
        plain.request(method="GET", url=path, params={}, json=None, headers=headers, timeout=1)
