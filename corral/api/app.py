"""The FastAPI application factory: :func:`create_app` wires the routes to one controller.

The app does not own the controller's life: whoever creates the controller starts and stops it
(``corral serve`` does so around uvicorn). This module must not start or stop the controller.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response

from corral import __version__
from corral import wire as models
from corral.api import errors, guard, hosts, operate, routes, surfaces
from corral.api.auth import Authenticator
from corral.api.context import Context, LockView, TaskView
from corral.api.facade import ControllerFacade
from corral.api.keys import TicketKeys
from corral.api.metrics import CONTENT_TYPE, Metrics
from corral.config import CorralConfig

DESCRIPTION = """\
corral keeps pools of virtual machines ready and hands them out to jobs.

Every error is `{"error": {"code": ..., "message": ...}}` with a stable `code`
(see `corral/exceptions.py`). Send `Authorization: Bearer <token>` when the server has tokens.
"""


def create_app(
    controller: ControllerFacade,
    config: CorralConfig,
    *,
    body_timeout: float = guard.BODY_TIMEOUT,
) -> FastAPI:
    """The HTTP API of ``controller``, authenticating with the tokens of ``config.api``.

    Every request first passes :class:`~corral.api.guard.Guard` (control characters,
    cross-origin changes, the token before the body, the body's size and deadline).
    """
    app = FastAPI(
        title="corral",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/openapi.json",
        docs_url=None,  # served offline by corral.api.surfaces
        redoc_url=None,
    )
    tasks = TaskView(controller.tasks)
    metrics = Metrics(controller, tasks.states)
    auth = Authenticator(config.api.tokens)
    app.state.corral = Context(
        controller=controller,
        auth=auth,
        tasks=tasks,
        locks=LockView(controller.locks),
        metrics=metrics,
        keys=TicketKeys(controller.store.keys),
    )
    errors.install(app)
    _add_health(app, metrics)  # first: matched before every other route
    _add_routes(app, routes.router)
    _add_routes(app, operate.router)  # pause/resume/drain, hold, audit, reconcile, reload
    _add_routes(app, hosts.router)  # the cluster's hosts (issue 11)
    app.add_middleware(
        guard.Guard, auth=auth, max_body=config.api.max_body, body_timeout=body_timeout
    )
    surfaces.install(app, controller)  # event stream, dashboard, /docs, /readyz, access log

    return app


def _add_routes(app: FastAPI, router: APIRouter) -> None:
    """Add the routes of ``router`` to ``app`` itself, in order.

    Not ``include_router``: FastAPI (0.16x) then matches every request through a wrapper of
    the included router that walks its routes more than once per request, ~60 % of the CPU of
    an in-process ``GET /healthz`` (issue 14). The routes already carry the router's prefix
    and responses, so the API and its OpenAPI schema are the same.
    """
    app.router.routes.extend(router.routes)


def _add_health(app: FastAPI, metrics: Metrics) -> None:
    """``/healthz`` and ``/metrics``."""

    @app.head("/healthz", include_in_schema=False)  # load balancers probe with HEAD
    @app.get("/healthz", tags=["health"])
    async def healthz() -> models.Health:
        """Liveness: the process answers and its event loop is not blocked."""
        return models.Health(status="ok", version=__version__)

    @app.get(
        "/metrics",
        tags=["health"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text."}},
    )
    async def prometheus() -> Response:
        """Tickets, VMs, tasks, latencies and backend failures in the Prometheus text format."""
        return Response(await metrics.render(), media_type=CONTENT_TYPE)
