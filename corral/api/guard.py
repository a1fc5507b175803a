"""The ASGI gate every request passes before the app sees it (issue 8, items 9 to 12).

In this order, so that nothing is read or done for a request that will be refused:

1. **Input that no route may see**: control characters (NUL above all) in the path or the query
   are refused with 422 here, on every store (PostgreSQL cannot even bind a NUL).
2. **Cross-origin state changes**: a browser on another site may send a simple form POST to a
   loopback server (open mode included). A request whose method changes state and whose
   ``Sec-Fetch-Site`` or ``Origin`` names another site is refused (403 ``cross_origin``).
   Non-browser clients send neither header and are not affected.
3. **Authentication before the body**: a ``/v1`` request without a valid token is refused (401)
   before one byte of its body is read, so an anonymous client cannot make the server buffer
   anything. The principal is handed on to the routes in the ASGI scope.
4. **A bounded body**: a declared ``Content-Length`` above the cap is refused at once (413); a
   chunked body is read up to the cap; the whole body must arrive within a deadline (408).

The checks are pure functions; :class:`Guard` is the thin ASGI shell around them. This module
must not decide authorisation (which caller may do what): the routes do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import exceptions
from corral.api import protocol
from corral.api.auth import Authenticator, Principal

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
"""Methods that change nothing: never refused for their origin."""

SAME_SITE = frozenset({"same-origin", "none"})
"""``Sec-Fetch-Site`` values of a request the user made on the server's own pages or by hand."""

BODY_TIMEOUT = 30.0
"""Seconds the whole request body may take to arrive."""

PRINCIPAL = "corral.principal"
"""Key of the authenticated :class:`Principal` in the ASGI scope's ``state``."""

ARRIVED = protocol.ARRIVED
"""Key of the request's arrival (the event loop's time) in the ASGI scope's ``state``: stamped by
the server's protocol when it read the head, else by :class:`Guard`."""


CONTROL = re.compile("[\x00-\x1f\x7f]")
"""A control character (below U+0020, or DEL), as refused in paths and queries."""


def _has_control(text: str) -> bool:
    # one regular-expression search, not a Python loop over the characters: this runs on every
    # request's path (issue 14)
    return CONTROL.search(text) is not None


def check_text(path: str, query: bytes) -> None:
    """Refuse control characters in the (decoded) path or the query's names and values."""
    if _has_control(path):
        raise exceptions.InvalidInput("request path: control characters (such as NUL) are refused")
    if not query:
        return
    try:
        pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise exceptions.InvalidInput("request query: not valid UTF-8") from None
    for name, value in pairs:
        if _has_control(name) or _has_control(value):
            raise exceptions.InvalidInput(
                f"query field {name[:64]!r}: control characters (such as NUL) are refused"
            )


def check_origin(method: str, headers: Mapping[str, str]) -> None:
    """Refuse a state-changing request that a browser sent from another site.

    ``Origin`` is compared with ``Host`` by host and port only: behind a TLS proxy the scheme the
    server sees differs from the browser's, but another site never has the server's host.
    """
    if method in SAFE_METHODS:
        return
    site = headers.get("sec-fetch-site")
    if site is not None and site.lower() not in SAME_SITE:
        raise exceptions.CrossOriginRefused(
            f"{method} from another site (Sec-Fetch-Site: {site[:32]}) is refused"
        )
    origin = headers.get("origin")
    if origin is None:
        return
    host = headers.get("host", "")
    netloc = urlsplit(origin).netloc if "://" in origin else ""
    if not netloc or netloc.lower() != host.lower():
        raise exceptions.CrossOriginRefused(
            f"{method} from origin {origin[:100]!r} is refused (this server is {host[:100]!r})"
        )


def check_length(headers: Mapping[str, str], limit: int) -> None:
    """Refuse a declared ``Content-Length`` above ``limit`` before reading anything."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise exceptions.BodyTooLarge(
            f"request body: {declared} bytes, this server accepts at most {limit}"
        )


def declares_no_body(raw: Iterable[tuple[bytes, bytes]]) -> bool:
    """True when the request's head declares no body: no ``Transfer-Encoding`` and no
    ``Content-Length`` other than 0 (every one of them, not only the first)."""
    for name, value in raw:
        lowered = name.lower()
        if lowered == b"transfer-encoding" or (lowered == b"content-length" and value != b"0"):
            return False
    return True


def needs_token(path: str) -> bool:
    """True for the paths that need a token on a server that has tokens (the ``/v1`` API)."""
    return path == "/v1" or path.startswith("/v1/")


def decode_headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request headers by lower-case name (the first of repeated ones)."""
    found: dict[str, str] = {}
    for name, value in raw:
        found.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return found


async def respond(send: Send, error: exceptions.CorralError, *, close: bool = False) -> None:
    """Send ``error`` as corral's error JSON (``close`` asks the client to drop the
    connection, for a request whose body is left unread)."""
    body = json.dumps(error.to_dict()).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if error.http_status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if error.http_status == 503:
        headers.append((b"retry-after", b"1"))
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI middleware applying the checks of this module before the app runs."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        auth: Authenticator,
        max_body: int,
        body_timeout: float = BODY_TIMEOUT,
    ) -> None:
        self.app = app
        self.auth = auth
        self.max_body = max_body
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # the request's arrival, if the protocol did not stamp it when it read the head: a
        # long-poll's ``wait`` counts from there, not from its route
        protocol.stamp_arrival(scope, asyncio.get_running_loop().time())
        headers = decode_headers(scope["headers"])
        try:
            check_text(scope["path"], scope.get("query_string", b""))
            check_origin(scope["method"], headers)
            if needs_token(scope["path"]):
                principal = self.auth.authenticate(headers.get("authorization"))
                scope.setdefault("state", {})[PRINCIPAL] = principal
            check_length(headers, self.max_body)
        except exceptions.CorralError as exc:
            await respond(send, exc, close=True)
            return
        try:
            if declares_no_body(scope["headers"]):
                body = await self._read_empty_body(receive)
            else:
                body = await self._read_body(receive)
        except exceptions.CorralError as exc:
            await respond(send, exc, close=True)
            return
        if body is None:
            return  # the client went away while sending its body
        await self.app(scope, _replay(body, receive), send)

    async def _read_empty_body(self, receive: Receive) -> bytes | None:
        """The body of a request whose head declares none: the server has the whole request
        once it has read its head, so the first message comes at once and needs no deadline
        (one timer per request spared: most requests, a long-poll's included, have no body)."""
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            self._check_size(len(chunk))  # a server that sends a body after all: bounded too
            return chunk
        # more is coming after all: read the rest within the deadline
        return await self._read_body(receive, first=chunk)

    def _check_size(self, size: int) -> None:
        if size > self.max_body:
            raise exceptions.BodyTooLarge(
                f"request body: more than {self.max_body} bytes, the most this server accepts"
            )

    async def _read_body(self, receive: Receive, first: bytes = b"") -> bytes | None:
        chunks: list[bytes] = [first] if first else []
        size = len(first)
        self._check_size(size)
        try:
            async with asyncio.timeout(self.body_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    self._check_size(size)
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise exceptions.RequestTimeout(
                f"request body: not received within {self.body_timeout:g} s"
            ) from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then the client's own events
    (so a long-poll still learns when its client disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def arrived_at(scope: Scope) -> float | None:
    """The event loop's time when the server read this request's head (or :class:`Guard` saw it
    arrive), if either did."""
    state = scope.get("state")
    if isinstance(state, dict):
        found = state.get(ARRIVED)
        if isinstance(found, float):
            return found
    return None


def principal_of(scope: Scope) -> Principal | None:
    """The principal :class:`Guard` authenticated for this request, if it did."""
    state = scope.get("state")
    if isinstance(state, dict):
        found = state.get(PRINCIPAL)
        if isinstance(found, Principal):
            return found
    return None
