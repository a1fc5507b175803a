"""A blocking HTTP/1.1 transport on the standard library, for the ``corral`` command's requests.

Importing httpx (with httpcore, h11, ``urllib.request``, ``http.cookiejar``, ...) is about a
fifth of a client command's instructions (issue 14), and a command such as ``corral tickets``
sends one plain ``GET``. :class:`PlainHTTP` sends a :func:`corral.client.core.request` with
:mod:`http.client` instead: the same method, path, query, JSON body and headers, the timeout
applied to the connection and to every read as httpx applies its own. Like httpx, it keeps its
connection open between requests (HTTP/1.1 keep-alive: a client's 60 requests then cost the
server one accepted connection, not 60), one per thread (the lease renewer of
:meth:`~corral.client.Client.acquire` sends from its own), and before reusing one it checks, as
httpcore does, that the server has not closed it meanwhile. It answers only what
:class:`corral.client.Client` reads of a response: its status and body.

It serves plain ``http://`` URLs without a proxy in the environment (:func:`usable`); anything
else (TLS, ``HTTP_PROXY``, the event stream) goes through httpx as before. Failures to reach the
server are raised as :class:`TransportError` / :class:`TransportTimeout`, which
:func:`corral.client.core.transport_errors` words exactly as httpx's.

This module must import nothing beyond the standard library.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")
"""The environment variables by which httpx would send an ``http://`` request through a proxy."""


class TransportError(Exception):
    """The server could not be reached, or broke the connection before answering."""


class TransportTimeout(TransportError):
    """The server did not connect or answer within the timeout."""


@dataclass(frozen=True, slots=True)
class Response:
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
        self._prefix = parts.path.rstrip("/")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPConnection] = set()

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
        sent = dict(headers)
        body: bytes | None = None
        if json is not None:
            body = _dumps(json)
            sent["Content-Type"] = "application/json"
        connection = self._connection(timeout)
        try:
            connection.request(method, target, body=body, headers=sent)
            answer = connection.getresponse()
            response = Response(answer.status, answer.read())
        except TimeoutError as exc:
            self._drop(connection)
            raise TransportTimeout(str(exc)) from exc
        except (OSError, http.client.HTTPException) as exc:
            self._drop(connection)
            raise TransportError(str(exc)) from exc
        if answer.will_close:
            self._drop(connection)
        return response

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        """This thread's connection: the open one unless the server closed it meanwhile."""
        connection: http.client.HTTPConnection | None = getattr(self._local, "connection", None)
        if connection is not None and (connection.sock is None or _closed(connection.sock)):
            self._drop(connection)
            connection = None
        if connection is None:
            connection = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
            self._local.connection = connection
            with self._lock:
                self._open.add(connection)
        else:
            connection.timeout = timeout
            connection.sock.settimeout(timeout)
        return connection

    def _drop(self, connection: http.client.HTTPConnection) -> None:
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


def _closed(sock: Any) -> bool:
    """Whether the server closed (or wrote unasked to) an idle connection: readable at once."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _dumps(value: object) -> bytes:
    """A JSON body as httpx writes one."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
