"""uvicorn's h11 protocol with the limits a server facing hostile clients needs (issue 8, item 12).

uvicorn bounds the idle time between requests (``timeout_keep_alive``) but not the time a client
takes to send its headers: a client that opens a connection and sends a few bytes, or nothing,
holds it forever. :class:`LimitedH11Protocol` gives every request's headers a deadline from the
moment its first byte (or the connection) arrives, and answers headers larger than h11's buffer
limit with ``431`` and corral's error JSON, where uvicorn answers a bare ``400``.

:class:`LimitedHttpToolsProtocol` is the same on uvicorn's httptools (llhttp) parser, which costs
less CPU per request than h11 (pure Python); :func:`limited` picks it when httptools is installed.
Both answer the same hostile input the same way (``tests/api/test_protocol.py`` runs one suite on
both).

The body's own deadline and size are the ASGI guard's (:mod:`corral.api.guard`). This module
must not know about routes or tokens.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from corral import exceptions

HEADER_TIMEOUT = 10.0
"""Seconds a client may take to send a request's headers."""

MAX_HEADER_BYTES = 32 * 1024
"""The largest request head (request line and headers) accepted; larger gets 431."""

ARRIVED = "corral.arrived"
"""Key, in the ASGI scope's ``state``, of the event loop's time when the server read the request's
head: a long-poll's ``wait`` counts from there. Under a burst, a request read at once may wait
for its turn on the loop before any application code sees it; that queueing is the server's, so
it counts against the wait rather than being added to it (issue 8, item 3)."""


def stamp_arrival(scope: Any, at: float) -> None:
    """Record ``at`` as the request's arrival in ``scope`` unless one is recorded already."""
    if scope is not None:
        scope.setdefault("state", {}).setdefault(ARRIVED, at)


def refuse_large_head(transport: asyncio.Transport, limit: int) -> None:
    """Answer 431 with corral's error JSON and close: the request head exceeded ``limit`` bytes.

    Written by hand: the parser is in an error state and would refuse to send.
    """
    error = exceptions.HeadersTooLarge(f"request headers: larger than {limit} bytes")
    body = json.dumps(error.to_dict()).encode()
    head = (
        b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
        b"content-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n"
        b"connection: close\r\n\r\n"
    )
    transport.write(head + body)
    transport.close()


class _Connection(h11.Connection):
    """An h11 connection that remembers why it failed and reports each request head it parses."""

    def __init__(self, role: type[h11.SERVER], limit: int) -> None:
        super().__init__(role, limit)
        self.limit = limit
        self.failure: h11.RemoteProtocolError | None = None
        self.on_request: Any = None

    def next_event(self) -> Any:
        """h11's next event, noting a protocol error and announcing a complete request head.

        h11 bounds only a head still incomplete in its buffer; a large head arriving in one
        read is complete at once, so its size is checked here too.
        """
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                size = len(event.target) + sum(len(k) + len(v) + 4 for k, v in event.headers)
                if size > self.limit:
                    raise h11.RemoteProtocolError("headers too large", error_status_hint=431)
        except h11.RemoteProtocolError as exc:
            self.failure = exc
            raise
        if isinstance(event, h11.Request) and self.on_request is not None:
            self.on_request()
        return event


class HeadDeadline:
    """The deadline of a request's head, shared by both parsers' protocols: armed when a
    connection or a request starts, disarmed when the head is complete, and on expiry
    :meth:`_headers_late` (each protocol's own idle test) closes the connection."""

    header_timeout: float = HEADER_TIMEOUT
    loop: asyncio.AbstractEventLoop
    _header_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_late(self) -> None:
        raise NotImplementedError


class LimitedH11Protocol(HeadDeadline, H11Protocol):
    """uvicorn's :class:`H11Protocol` with a header deadline and 431 for oversized headers."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limit = self.config.h11_max_incomplete_event_size or MAX_HEADER_BYTES
        connection = _Connection(h11.SERVER, limit)
        connection.on_request = self._headers_complete
        self.conn = connection
        self._header_timer = None
        self._arrived: float | None = None
        """When the head now being made a request was read (see :data:`ARRIVED`)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection and start the deadline of its first request's headers."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Bytes of a new request start its header deadline; a head completed by them is
        stamped with its arrival (:data:`ARRIVED`)."""
        if self._header_timer is None and self.conn.their_state is h11.IDLE:
            self._arm()
        super().data_received(data)
        if self._arrived is not None:  # the head completed here: uvicorn made its scope
            stamp_arrival(self.scope, self._arrived)
            self._arrived = None

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def _headers_complete(self) -> None:
        self._disarm()
        self._arrived = self.loop.time()

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self.logger.debug("closing a connection whose request headers were late")
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 refused: 431 when its head was too large, else uvicorn's 400."""
        failure = self.conn.failure if isinstance(self.conn, _Connection) else None
        if (
            failure is None
            or failure.error_status_hint != 431
            or not isinstance(self.conn, _Connection)
        ):
            super().send_400_response(msg)
            return
        refuse_large_head(self.transport, self.conn.limit)


Parser = Literal["auto", "h11", "httptools"]
"""Which HTTP/1.1 parser serves the API: ``auto`` is httptools when it is installed, else h11."""


def has_httptools() -> bool:
    """True when httptools (uvicorn's C parser) can be imported."""
    return importlib.util.find_spec("httptools") is not None


def limited(header_timeout: float = HEADER_TIMEOUT, parser: Parser = "auto") -> type[Any]:
    """The protocol class with ``header_timeout`` (uvicorn instantiates it per connection), on
    httptools or h11 as ``parser`` says."""
    base: type[Any] = LimitedH11Protocol
    if parser == "httptools" or (parser == "auto" and has_httptools()):
        from corral.api.httptools_protocol import LimitedHttpToolsProtocol

        base = LimitedHttpToolsProtocol
    return type(base.__name__, (base,), {"header_timeout": header_timeout})
