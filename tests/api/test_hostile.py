"""Hostile input (issue 8, items 9 to 13): each test names the fix it fails without.

In-process tests use httpx's ASGI transport; the tests of what happens on the wire (a body left
unread, oversized or slow headers) talk to a real uvicorn server through a raw socket.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, auth, controller_class, make_config

from corral import exceptions
from corral.api import create_app
from corral.api.errors import render
from corral.api.server import BackgroundServer

ALICE = auth(ALICE_TOKEN)
ADMIN = auth(ADMIN_TOKEN)
SQL_WORDS = ("SELECT", "INSERT", "UPDATE", "WHERE", "[SQL", "parameters")


@pytest.fixture
async def open_http() -> AsyncIterator[httpx.AsyncClient]:
    """An open server (no tokens), in process."""
    config = make_config(tokens=False)
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8642") as c:
            yield c
    finally:
        await ctl.stop()


async def _ready_vm(http: httpx.AsyncClient) -> str:
    deadline = time.monotonic() + 20
    while True:
        vms = (await http.get("/v1/vms", params={"state": "ready"})).json()
        if vms:
            return str(vms[0]["name"])
        assert time.monotonic() < deadline, "no VM became ready"
        await asyncio.sleep(0.02)


# --- item 10: cross-origin state changes -------------------------------------------------------


async def test_cross_origin_changes_are_refused_in_open_mode(
    open_http: httpx.AsyncClient,
) -> None:
    """Fails without the guard's origin check: the evil page's form POST terminates a VM."""
    name = await _ready_vm(open_http)
    hostile = [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:8642.evil.example"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:8642"},
    ]
    for headers in hostile:
        form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        refused = await open_http.post(f"/v1/vms/{name}/terminate", headers=form, content=b"a=1")
        assert refused.status_code == 403, headers
        assert refused.json()["error"]["code"] == "cross_origin", headers
        ticket = await open_http.post("/v1/tickets", json={"pool": "small"}, headers=headers)
        assert ticket.status_code == 403, headers
    assert (await open_http.get(f"/v1/vms/{name}")).json()["state"] == "ready"
    assert (await open_http.get("/v1/tickets")).json() == [], "a refused request changes nothing"
    # Reads stay possible from anywhere (the browser's same-origin policy guards their answers),
    # and the server's own pages and non-browser clients may change things.
    assert (await open_http.get("/v1/vms", headers={"Origin": "http://evil.example"})).is_success
    same = {"Origin": "http://127.0.0.1:8642", "Sec-Fetch-Site": "same-origin"}
    created = await open_http.post("/v1/tickets", json={"pool": "small"}, headers=same)
    assert created.status_code == 201
    plain = await open_http.post("/v1/tickets", json={"pool": "small"})
    assert plain.status_code == 201


# --- item 11: NUL bytes and other control characters, on every store ---------------------------


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'corral.db'}"
    return str(request.getfixturevalue("pg_url"))


async def test_control_characters_are_4xx_on_every_store(store_url: str) -> None:
    """Fails without the guard's and the request model's checks: on PostgreSQL a NUL reaches
    the driver, which answers 503 with the SQL statement and its parameters."""
    config = make_config(store=store_url)
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    app = create_app(ctl, config)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            requests = [
                ("GET", "/v1/tickets/ab%00cd", None),
                ("POST", "/v1/tickets/ab%00cd/close", None),
                ("GET", "/v1/tickets?owner=a%00b", None),
                ("GET", "/v1/tickets/by-key/abcdefgh%00", None),
                ("GET", "/v1/vms?pool=x%1fy", None),
                ("GET", "/v1/vms/a%00", None),
                ("POST", "/v1/tickets", {"pool": "small", "sandbox": "a\u0000b"}),
                ("POST", "/v1/tickets", {"pool": "small", "owner": "x\u0000"}),
                ("POST", "/v1/tickets", {"tags": ["fedora\u0000"]}),
            ]
            for method, path, body in requests:
                response = await http.request(method, path, json=body, headers=ADMIN)
                assert response.status_code == 422, (path, body, response.text)
                error = response.json()["error"]
                assert error["code"] == "invalid_input"
                assert "control characters" in error["message"], error
                assert not any(word in error["message"] for word in SQL_WORDS), error
            listed = (await http.get("/v1/tickets", headers=ADMIN)).json()
            assert listed == [], "a refused request changes nothing"
    finally:
        # no lifespan runs under ASGITransport: close the event stream as a stopping server
        # does (on PostgreSQL it holds the cluster event log's connections)
        await app.state.corral_events.close()
        await ctl.stop()


def test_store_errors_never_show_sql() -> None:
    """Fails without the boundary translation in ``errors.render``."""
    leaked = exceptions.StoreError(
        "(psycopg.DataError) PostgreSQL text fields cannot contain NUL (0x00) bytes "
        "[SQL: SELECT tickets.id FROM tickets WHERE tickets.id = %(id)s] [parameters: ...]"
    )
    response = render(leaked)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    body = json.loads(bytes(response.body))
    assert body["error"]["code"] == "store_error"
    assert not any(word in body["error"]["message"] for word in SQL_WORDS)


# --- item 13: strict numbers, HEAD /healthz -----------------------------------------------------


async def test_ttl_and_priority_are_strict(http: httpx.AsyncClient) -> None:
    """Fails with the lax model: ``true`` and ``"10"`` are coerced, 1e-320 is a positive ttl."""
    bad = [
        {"ttl": True},
        {"ttl": "10"},
        {"ttl": 1e-320},
        {"ttl": 0},
        {"ttl": -5},
        {"ttl": 1e308},
        {"priority": True},
        {"priority": "3"},
        {"priority": 1.5},
    ]
    for extra in bad:
        response = await http.post("/v1/tickets", json={"pool": "small", **extra}, headers=ALICE)
        assert response.status_code == 422, extra
        assert next(iter(extra)) in response.json()["error"]["message"], extra
    for raw in (b'{"pool": "small", "ttl": NaN}', b'{"pool": "small", "ttl": Infinity}'):
        response = await http.post(
            "/v1/tickets", content=raw, headers={**ALICE, "Content-Type": "application/json"}
        )
        assert response.status_code == 422, raw
    assert (await http.get("/v1/tickets", headers=ADMIN)).json() == []
    good = await http.post("/v1/tickets", json={"pool": "small", "ttl": 60}, headers=ALICE)
    assert good.status_code == 201
    assert good.json()["ttl"] == 60.0


async def test_head_healthz(http: httpx.AsyncClient) -> None:
    """Fails while /healthz answers only GET (HEAD was 405)."""
    response = await http.head("/healthz")
    assert response.status_code == 200
    assert response.content == b""


def test_non_ascii_tokens_are_refused_by_the_config() -> None:
    """Fails without the config check: a token no HTTP header can carry was accepted."""
    from corral.config import parse_config

    for token in ("pässwörd-123", "two words here", "tab\there12"):
        with pytest.raises(exceptions.ConfigError, match="printable ASCII"):
            parse_config({"api": {"tokens": {token: {"owner": "a"}}}}, env={})


# --- items 9 and 12: on the wire ---------------------------------------------------------------


@pytest.fixture(scope="module", params=["h11", "httptools"])
def wire(request: pytest.FixtureRequest) -> Iterator[BackgroundServer]:
    """A real server with short header and body deadlines (the tests wait far longer), on each
    of the HTTP parsers ``corral serve`` may run (tests/api/test_protocol.py)."""
    with BackgroundServer(
        make_config(),
        factory=controller_class().create,
        header_timeout=0.5,
        body_timeout=0.5,
        parser=request.param,
    ) as running:
        yield running


def _connect(server: BackgroundServer) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=20)
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of one response (the server closes the connection after it)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break  # the server reset after answering: the answer is already here
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body else {}


def _post_head(length: int, token: str | None) -> bytes:
    lines = [
        "POST /v1/tickets HTTP/1.1",
        "Host: corral.test",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize(
    ("token", "status", "code"),
    [
        (None, 401, "unauthorized"),
        ("wrong-token-123", 401, "unauthorized"),
        (ALICE_TOKEN, 413, "body_too_large"),
    ],
)
def test_large_body_is_refused_unread(
    wire: BackgroundServer, token: str | None, status: int, code: str
) -> None:
    """A 200 MB body announced by an anonymous (or valid) client: the answer comes after 64 KiB
    were sent, so the server cannot have read (or buffered) the rest. Fails without auth before
    the body and the Content-Length cap: the server waits for all 200 MB and never answers."""
    with _connect(wire) as sock:
        sock.sendall(_post_head(200 * 1024 * 1024, token))
        sock.sendall(b"x" * 65536)
        answered, body = _read_response(sock)
    assert (answered, body["error"]["code"]) == (status, code)


def test_chunked_body_is_capped(wire: BackgroundServer) -> None:
    """A chunked body (no Content-Length) is read up to the cap only. Fails without the cap
    on the bytes read: the server buffers whatever it is sent."""
    with _connect(wire) as sock:
        head = (
            "POST /v1/tickets HTTP/1.1\r\nHost: corral.test\r\n"
            f"Authorization: Bearer {ALICE_TOKEN}\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        sock.sendall(head.encode())
        chunk = b"x" * 16384
        for _ in range(64):  # 1 MiB offered; the answer comes long before
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if select.select([sock], [], [], 0.05)[0]:
                break  # answered: stop sending, so the close is not a reset
        answered, body = _read_response(sock)
    assert (answered, body["error"]["code"]) == (413, "body_too_large")


def test_oversized_headers_get_431(wire: BackgroundServer) -> None:
    """Fails with uvicorn's own handling (a bare 400, or a reset connection)."""
    with _connect(wire) as sock:
        head = "GET /healthz HTTP/1.1\r\nHost: corral.test\r\nX-Big: " + "a" * 100_000
        try:
            sock.sendall((head + "\r\n\r\n").encode())
        except OSError:
            pass
        answered, body = _read_response(sock)
    assert (answered, body["error"]["code"]) == (431, "headers_too_large")


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes ``sock`` within ``seconds`` (a generous deadline)."""
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def test_slow_and_idle_connections_are_closed(wire: BackgroundServer) -> None:
    """Partial headers and a connection that sends nothing are dropped after the header
    deadline (0.5 s here; the test allows 20 s). Fails without the protocol's header timer:
    uvicorn keeps both open forever."""
    with _connect(wire) as silent, _connect(wire) as partial:
        partial.sendall(b"GET /healthz HTTP/1.1\r\nHost: corral.test\r\n")
        assert _closed_within(partial, 20), "partial headers kept the connection open"
        assert _closed_within(silent, 20), "a silent connection stayed open"


def test_slow_body_gets_408(wire: BackgroundServer) -> None:
    """A body that stops arriving is refused after the body deadline. Fails without the
    guard's deadline: the request hangs as long as the client likes."""
    with _connect(wire) as sock:
        sock.sendall(_post_head(100, ALICE_TOKEN) + b'{"pool": ')
        answered, body = _read_response(sock)
    assert (answered, body["error"]["code"]) == (408, "request_timeout")


def test_keep_alive_still_works(wire: BackgroundServer) -> None:
    """The limits do not break a normal client reusing its connection."""
    with httpx.Client(base_url=wire.url, headers=ALICE) as http:
        for _ in range(3):
            assert http.get("/healthz").status_code == 200
            assert http.get("/v1/tickets").status_code == 200


async def test_body_cap_follows_the_config() -> None:
    """``api.max_body`` is the cap (fails if the guard ignores the config)."""
    from corral.config import parse_config

    base = make_config()
    raw: dict[str, Any] = {
        "store": "memory://",
        "api": {"max_body": 2048, "tokens": {ALICE_TOKEN: {"owner": "alice"}}},
        "pools": {"small": {"backend": {"type": "fake"}, "max": 1, "min_ready": 0}},
    }
    config = parse_config(raw, env={})
    assert config.api.max_body == 2048 != base.api.max_body
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            big = {"pool": "small", "sandbox": "s" * 200, "tags": ["t" * 200] * 12}
            refused = await http.post("/v1/tickets", json=big, headers=ALICE)
            assert refused.status_code == 413
            assert refused.json()["error"]["code"] == "body_too_large"
            small = await http.post("/v1/tickets", json={"pool": "small"}, headers=ALICE)
            assert small.status_code == 201
    finally:
        await ctl.stop()
