"""A blocking HTTP/1.1 transport on the standard library, for the ``corral`` command's requests.

Importing httpx (with httpcore, h11, ``urllib.request``, ``http.cookiejar``, ...) is about a
fifth of a client command's instructions (issue 14), and a command such as ``corral tickets``
sends one plain ``GET``. :class:`PlainHTTP` sends a :func:`corral.client.core.request` over a
socket instead: the same method, path, query, JSON body and headers, the timeout applied to the
connection and to every read as httpx applies its own. It writes and reads HTTP/1.1 itself
rather than through :mod:`http.client`, whose import (``email.parser``, ``ssl``, ...) alone
cost a client process more than the rest of the client library (issue 14): a response is read
by its ``Content-Length``, chunk by chunk, or to the end of the connection (:func:`read`).

Like httpx, it keeps its connection open between requests (HTTP/1.1 keep-alive: a client's 60
requests then cost the server one accepted connection, not 60), one per thread (the lease
renewer of :meth:`~corral.client.Client.acquire` sends from its own), and before reusing one it
checks, as httpcore does, that the server has not closed it meanwhile. It answers only what
:class:`corral.client.Client` reads of a response: its status and body.

It serves plain ``http://`` URLs without a proxy in the environment (:func:`usable`); anything
else (TLS, ``HTTP_PROXY``, the event stream) goes through httpx as before. Failures to reach the
server are raised as :class:`TransportError` / :class:`TransportTimeout`, which
:func:`corral.client.core.transport_errors` words exactly as httpx's.

This module must import nothing beyond the standard library.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any, NamedTuple
from urllib.parse import urlencode, urlsplit

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
"""The environment variables by which httpx would send an ``http://`` request through a proxy."""


class TransportError(Exception):
    """The server could not be reached, broke the connection before answering, or answered
    something that is not HTTP."""


class TransportTimeout(TransportError):
    """The server did not connect or answer within the timeout."""


MAX_LINE = 65536
"""The longest status or header line read (as :mod:`http.client`'s limit)."""

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""A method or header name (RFC 9110's token)."""

_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
"""What a request target must not contain (as :mod:`http.client` refuses it): no control
characters, no space (a request line or header smuggled in)."""

_DIGITS = re.compile(r"[0-9]+")
"""A decimal number as HTTP writes one (``str.isdigit`` also takes ``²`` and other digits)."""
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
"""A chunk size (``int(x, 16)`` also takes ``-5``, ``0x10`` and ``1_0``)."""
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""What a header value must not contain: no control characters but tab (no CR or LF, which
would end the header and smuggle another)."""

MAX_HEADERS = 100
"""The most header lines one response may have (as :mod:`http.client`'s limit)."""


class Response(NamedTuple):
    """What the client reads of an answer."""

    status_code: int
    content: bytes


def usable(url: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether :class:`PlainHTTP` sends to ``url`` what httpx would: a plain ``http://`` URL
    without credentials in it (httpx would send them as basic auth) and with no proxy configured
    in the environment."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in PROXY_VARIABLES):
        return False
    parts = urlsplit(url)
    return parts.scheme.lower() == "http" and bool(parts.hostname) and "@" not in parts.netloc


def _text(value: object) -> str:
    """A query value as httpx writes it (``true``/``false`` for booleans, ``""`` for None)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return "" if value is None else str(value)


def query(params: Mapping[str, object]) -> str:
    """The query string of ``params``; a sequence value repeats its key."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if isinstance(value, Sequence) and not isinstance(value, str | bytes):
            pairs.extend((key, _text(item)) for item in value)
        else:
            pairs.append((key, _text(value)))
    return urlencode(pairs)


class PlainHTTP:
    """Sends requests to the server at ``url`` (``http://host[:port][/prefix]``)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {url!r}")
        self._host = parts.hostname
        self._port = parts.port or 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._authority = host if self._port == 80 else f"{host}:{self._port}"
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[_Connection] = set()

    def request(
        self,
        *,
        method: str,
        url: str,
        params: Mapping[str, object],
        json: Any,  # httpx's keyword
        headers: Mapping[str, str],
        timeout: float,
    ) -> Response:
        """Send one request and read its whole answer."""
        target = self._prefix + url
        if params:
            target += ("&" if "?" in target else "?") + query(params)
        body = b"" if json is None else _dumps(json)
        if not _TOKEN.fullmatch(method) or _UNSAFE.search(target):
            raise ValueError(f"invalid method or URL for HTTP: {method} {target!r}")
        for name, value in headers.items():
            if not _TOKEN.fullmatch(name) or _UNSAFE_VALUE.search(value):
                raise ValueError(f"invalid HTTP header {name!r}: {value!r}")
        head = [f"{method} {target} HTTP/1.1", f"Host: {self._authority}"]
        head.append("Accept-Encoding: identity")
        head += [f"{name}: {value}" for name, value in headers.items()]
        if json is not None:
            head.append("Content-Type: application/json")
        if json is not None or method in ("POST", "PUT", "PATCH"):
            head.append(f"Content-Length: {len(body)}")
        message = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        connection = self._connection(timeout)
        try:
            connection.sock.sendall(message)
            status, content, will_close = read(connection.reader, method)
        except TimeoutError as exc:
            self._drop(connection)
            raise TransportTimeout(str(exc)) from exc
        except TransportError:
            self._drop(connection)
            raise
        except OSError as exc:
            self._drop(connection)
            raise TransportError(str(exc)) from exc
        except BaseException:
            # anything else mid-answer (Ctrl-C, a malformed number): the answer may be half
            # read, so the connection must not carry the next request (it would read this one's)
            self._drop(connection)
            raise
        if will_close:
            self._drop(connection)
        return Response(status, content)

    def _connection(self, timeout: float) -> _Connection:
        """This thread's connection: the open one unless the server closed it meanwhile."""
        connection: _Connection | None = getattr(self._local, "connection", None)
        if connection is not None and _closed(connection.sock):
            self._drop(connection)
            connection = None
        if connection is None:
            try:
                sock = socket.create_connection((self._host, self._port), timeout)
            except TimeoutError as exc:
                raise TransportTimeout(str(exc)) from exc
            except OSError as exc:
                raise TransportError(str(exc)) from exc
            connection = _Connection(sock)
            self._local.connection = connection
            with self._lock:
                self._open.add(connection)
        else:
            connection.sock.settimeout(timeout)
        return connection

    def _drop(self, connection: _Connection) -> None:
        connection.close()
        if getattr(self._local, "connection", None) is connection:
            self._local.connection = None
        with self._lock:
            self._open.discard(connection)

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            connections, self._open = self._open, set()
        for connection in connections:
            connection.close()


class _Connection:
    """One open connection to the server and the buffered reader of its answers."""

    __slots__ = ("reader", "sock")

    def __init__(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # a request is one write
        self.sock = sock
        self.reader: IO[bytes] = sock.makefile("rb")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server closed (or wrote unasked to) an idle connection: readable at once.
    ``poll``, not ``select``: a process with more than 1,024 open files still keeps its
    connection."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


# --- reading an answer (no I/O of its own: any binary reader) -----------------------------------


def read(reader: IO[bytes], method: str) -> tuple[int, bytes, bool]:
    """One HTTP/1.x response from ``reader``: (status, body, whether the connection must be
    closed after it). An interim ``1xx`` answer is skipped; :class:`TransportError` when the
    server closed the connection before answering or answered something that is not HTTP."""
    while True:
        version, status = _status(_line(reader, "status line"))
        headers = _headers(reader)
        if not 100 <= status < 200:
            break
    tokens = headers.get("connection", "").lower()
    will_close = "close" in tokens or (version == "HTTP/1.0" and "keep-alive" not in tokens)
    if method == "HEAD" or status in (204, 304):
        return status, b"", will_close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, _chunks(reader), will_close
    length = headers.get("content-length")
    if length is None:
        return status, reader.read(), True  # delimited by the end of the connection
    if not _DIGITS.fullmatch(length):
        raise TransportError(f"invalid Content-Length {length!r}")
    body = reader.read(int(length))
    if len(body) < int(length):
        raise TransportError(f"incomplete answer: {len(body)} of {length} bytes")
    return status, body, will_close


def _line(reader: IO[bytes], what: str) -> bytes:
    line = reader.readline(MAX_LINE + 1)
    if len(line) > MAX_LINE:
        raise TransportError(f"{what} longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        if what == "status line" and not line:
            raise TransportError("Server disconnected without sending a response.")
        raise TransportError(f"connection closed in the {what}")
    return line


def _status(line: bytes) -> tuple[str, int]:
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code = rest[:3]
    if (
        not version.startswith("HTTP/1.")
        or not _DIGITS.fullmatch(code)
        or rest[3:4] not in ("", " ")
    ):
        raise TransportError(f"not an HTTP/1.x status line: {line[:80]!r}")
    return version, int(code)


def _headers(reader: IO[bytes]) -> dict[str, str]:
    """The header fields up to the blank line, names in lower case (repeated ones joined)."""
    found: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        line = _line(reader, "headers")
        if line in (b"\r\n", b"\n"):
            return found
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon:
            raise TransportError(f"not a header line: {line[:80]!r}")
        key = name.strip().lower()
        found[key] = f"{found[key]}, {value.strip()}" if key in found else value.strip()
    raise TransportError(f"more than {MAX_HEADERS} header lines")


def _chunks(reader: IO[bytes]) -> bytes:
    """A chunked body, its trailer fields read and dropped."""
    parts: list[bytes] = []
    while True:
        size = _line(reader, "chunk size").split(b";", 1)[0].strip()
        if not _HEX.fullmatch(size):
            raise TransportError(f"invalid chunk size {size[:20]!r}")
        length = int(size, 16)
        if length == 0:
            _headers(reader)  # the trailer
            return b"".join(parts)
        chunk = reader.read(length + 2)
        if len(chunk) < length + 2 or not chunk.endswith(b"\r\n"):
            raise TransportError("connection closed in a chunk")
        parts.append(chunk[:-2])


def _dumps(value: object) -> bytes:
    """A JSON body as httpx writes one."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
