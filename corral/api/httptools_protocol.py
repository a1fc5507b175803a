"""uvicorn's httptools protocol with the limits of :mod:`corral.api.protocol` (issue 8, item 12).

httptools (llhttp, in C) parses a request for a fraction of h11's CPU, but uvicorn's protocol on it
has neither a deadline for a request's head nor a bound on its size (httptools buffers a header
line however long it grows). :class:`LimitedHttpToolsProtocol` adds both, answering exactly as
:class:`~corral.api.protocol.LimitedH11Protocol` does: a connection whose head is not complete
within ``header_timeout`` is closed, and a head larger than ``MAX_HEADER_BYTES`` (its target plus
its header lines, counted in the parser's callbacks) is answered 431 with corral's error JSON.

Imported only when httptools is installed (:func:`corral.api.protocol.limited`). This module must
not know about routes or tokens.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from corral.api import protocol


class _HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a head over the limit."""


class LimitedHttpToolsProtocol(protocol.HeadDeadline, HttpToolsProtocol):
    """uvicorn's :class:`HttpToolsProtocol` with a header deadline and 431 for oversized heads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit = self.config.h11_max_incomplete_event_size or protocol.MAX_HEADER_BYTES
        self._header_timer = None
        self._in_message = False
        """From a request's first byte to its end (its body included)."""
        self._in_head = False
        """From a request's first byte to the end of its head."""
        self._head_size = 0
        """Bytes of the current head the parser reported: its target and header lines."""
        self._head_raw = 0
        """Bytes received while the current head stayed incomplete (a line still buffered)."""
        self._too_large = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Accept the connection and start the deadline of its first request's head."""
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Parse ``data``; bytes of a new request start its head's deadline, and a head still
        incomplete after more than the limit of bytes is refused.

        httptools reports a header only once its line is complete and buffers it until then, so
        the callbacks alone would not bound a header line that never ends.
        """
        if self._header_timer is None and not self._in_message:
            self._arm()
        head_was_open = self._in_head
        super().data_received(data)
        if self._in_head and not self._too_large:
            # bytes before the head's start (a previous pipelined request) are not counted: a
            # head that starts in this chunk is counted from the next one, at most a chunk late
            self._head_raw = self._head_raw + len(data) if head_was_open else 0
            if self._head_raw > self.limit:
                self._refuse()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadline with the connection."""
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        """A request's first byte: its head starts, and its arrival is stamped
        (:data:`corral.api.protocol.ARRIVED`)."""
        super().on_message_begin()
        protocol.stamp_arrival(self.scope, self.loop.time())
        self._in_message = self._in_head = True
        self._head_size = self._head_raw = 0

    def on_url(self, url: bytes) -> None:
        """A piece of the request target (counted in the head)."""
        self._grow(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """A header line (counted in the head as h11 counts it: name, value and 4 bytes)."""
        self._grow(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        """The head is complete within its limits: its deadline ends."""
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """The request's body is complete."""
        self._in_message = False
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        """Answer a request the parser refused: 431 when its head was too large, else 400."""
        if self._too_large:
            protocol.refuse_large_head(self.transport, self.limit)
            return
        super().send_400_response(msg)

    def _grow(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.limit:
            self._too_large = True
            raise _HeadTooLarge  # the parser fails: data_received calls send_400_response

    def _refuse(self) -> None:
        self._too_large = True
        self._disarm()
        self.logger.debug("refusing a request whose head exceeds %d bytes", self.limit)
        protocol.refuse_large_head(self.transport, self.limit)

    def _idle(self) -> bool:
        """No request in progress and none being answered (h11's ``IDLE``)."""
        return not self._in_message and (self.cycle is None or self.cycle.response_complete)

    def _headers_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing() and (self._in_head or self._idle()):
            self.logger.debug("closing a connection whose request headers were late")
            self.transport.close()
