"""The server's front door while the controller recovers: liveness before readiness (issue 12).

``corral serve`` listens before the controller has recovered its tasks and reconciled its
backends, which can take a while on a big store. Until :meth:`Gate.open` hands it the real app,
:class:`Gate` answers ``/healthz`` (the process lives: an orchestrator must not kill it),
``/readyz`` with 503 ``starting``, and every other request with 503 ``server_starting`` (a
retryable error, the clients back off and ask again). This module must not know the routes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from corral import __version__

STARTING_MESSAGE = "corral is recovering its tasks and reconciling its backends; retry shortly"


class Gate:
    """An ASGI app answering for the real one until it is ready."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    @property
    def ready(self) -> bool:
        """Whether the real app serves."""
        return self._app is not None

    def open(self, app: ASGIApp) -> None:
        """Serve ``app`` from now on."""
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is not None:
            await self._app(scope, receive, send)
            return
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served before the app is ready
        path = scope.get("path", "")
        if path == "/healthz":
            await _answer(send, scope, 200, {"status": "ok", "version": __version__})
        elif path == "/readyz":
            await _answer(
                send,
                scope,
                503,
                {"status": "starting", "reason": STARTING_MESSAGE, "version": __version__},
            )
        else:
            body = {"error": {"code": "server_starting", "message": STARTING_MESSAGE}}
            await _answer(send, scope, 503, body)


async def _answer(send: Send, scope: Scope, status: int, body: Mapping[str, object]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"retry-after", b"1"),
            ],
        }
    )
    head = scope.get("method") == "HEAD"
    await send({"type": "http.response.body", "body": b"" if head else data})
