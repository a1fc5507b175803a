"""The operator's surfaces added to the API app: the event stream, the dashboard, offline
``/docs``, readiness and the access log.

:func:`install` wires them into an app :func:`corral.api.app.create_app` made. This module must
not implement the pages or the stream: it only wires them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from corral import __version__, exceptions
from corral.api import events, logs, stream, ui
from corral.api.context import Context
from corral.api.facade import ControllerFacade
from corral.api.ui import pages
from corral.api.ui.session import Sessions
from corral.controller.commandlogs import CommandLogWriter
from corral.controller.events import EventBus

access = logging.getLogger("corral.access")

DOCS_ASSETS = "/docs/assets"
"""Where the Swagger UI files of the ``swagger-ui-py`` package are served (its Swagger UI 5
reads the OpenAPI 3.1 that FastAPI writes; ``swagger-ui-bundle``'s 4.x cannot)."""


def install(app: FastAPI, controller: ControllerFacade) -> None:
    """Add the event stream, the dashboard, ``/docs``, ``/readyz`` and the access log."""
    bus = getattr(controller, "events", None)
    hub = stream.EventHub(
        controller,
        bus if isinstance(bus, EventBus) else EventBus(),
        shared=stream.shared_log(controller),  # a cluster's hosts share one event log
    )
    app.state.corral_events = hub
    app.state.corral_sessions = Sessions()
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # started by the first stream instead
    else:
        hub.start()  # from now on: history for Last-Event-ID, decision log lines, the chart
        hub.close_on(app.state.corral.stopping)
    _keep_command_logs(app, controller)
    app.include_router(events.router)
    app.include_router(logs.router)
    app.include_router(ui.router)
    app.mount("/ui/static", StaticFiles(packages=[("corral.api.ui", "static")]), name="ui-static")
    _install_docs(app)
    _install_errors(app)
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"])
    app.add_middleware(AccessLog)


def _keep_command_logs(app: FastAPI, controller: ControllerFacade) -> None:
    """Hook the backends that report their commands to the store's command logs."""
    repository = controller.store.command_logs
    backends = getattr(controller, "backends", None)
    if repository is None or not callable(backends):
        return
    writer = CommandLogWriter(repository)
    writer.attach(backends())
    app.state.corral_command_logs = writer


def _install_docs(app: FastAPI) -> None:
    app.mount(DOCS_ASSETS, StaticFiles(packages=[("swagger_ui", "static")]), name="docs-assets")

    async def docs() -> HTMLResponse:
        """Swagger UI from files shipped with the server (works offline)."""
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="corral API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    app.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)


def _install_errors(app: FastAPI) -> None:
    """Dashboard requests get HTML errors and a login redirect; the API keeps its JSON errors."""
    api_handler = app.exception_handlers.get(exceptions.CorralError)

    async def corral_error(request: Request, exc: Exception) -> Response:
        if request.url.path.startswith("/ui/") and request.url.path != "/ui/events":
            assert isinstance(exc, exceptions.CorralError)  # noqa: S101 (registered for it)
            return pages.error_page(request, exc)
        if api_handler is None:  # pragma: no cover - errors.install always registers one
            raise exc
        result = api_handler(request, exc)
        return await result if isinstance(result, Awaitable) else result

    async def login_required(request: Request, exc: Exception) -> Response:
        return pages.login_required(request, exc)

    app.add_exception_handler(exceptions.CorralError, corral_error)
    app.add_exception_handler(pages.LoginRequired, login_required)


async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 once the controller serves (its store answers), 503 while stopping."""
    ctx: Context = request.app.state.corral
    if ctx.stopping.is_set():
        return JSONResponse({"status": "stopping", "version": __version__}, status_code=503)
    try:
        await ctx.controller.list_pools()
    except exceptions.CorralError as exc:
        return JSONResponse(
            {"status": "unavailable", "reason": exc.message, "version": __version__},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "version": __version__})


class AccessLog:
    """One ``corral.access`` line per request: method, path, status, time to the response's
    start, client. Headers (and so tokens) are never logged; neither is the query string."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not access.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = self._clock()
        status = 0

        async def logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                client = scope.get("client")
                access.info(
                    "%s %s %d %.1fms %s",
                    scope["method"],
                    scope["path"],
                    status,
                    (self._clock() - started) * 1000,
                    client[0] if client else "-",
                )
            await send(message)

        await self.app(scope, receive, logged)
