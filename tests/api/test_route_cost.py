"""The per-request cost of the HTTP path (issue 14): routes are matched directly, and the ticket
routes every client calls resolve the caller without FastAPI dependencies, while the API and
its OpenAPI schema stay as they were."""

from __future__ import annotations

from typing import Any

from apitools import controller_class, make_config
from fastapi.routing import APIRoute

from corral.api import create_app

TICKET_ROUTES = {
    ("POST", "/v1/tickets"),
    ("GET", "/v1/tickets/{ticket_id}"),
    ("POST", "/v1/tickets/{ticket_id}/renew"),
    ("POST", "/v1/tickets/{ticket_id}/close"),
}


async def _app() -> Any:
    config = make_config()
    ctl: Any = await controller_class().create(config)
    return create_app(ctl, config)


async def test_the_api_routes_are_the_apps_own_routes_health_first() -> None:
    """Fails when the API's routers are included with ``include_router`` (each request is then
    matched through a wrapper walking the router's routes several times) or when ``/healthz``
    is matched after them."""
    app = await _app()
    own = {
        (method, route.path)
        for route in app.router.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }
    assert TICKET_ROUTES <= own
    assert ("GET", "/v1/pools") in own and ("POST", "/v1/pools/{name}/pause") in own
    first = next(r for r in app.router.routes if isinstance(r, APIRoute))
    assert first.path == "/healthz"


async def test_ticket_routes_declare_the_bearer_token_and_no_dependencies() -> None:
    """Fails when a ticket route loses its security requirement in the OpenAPI schema (it
    authenticates without the bearer dependency that used to declare it), or when it gets the
    context and principal dependencies back."""
    app = await _app()
    schema = app.openapi()
    assert "HTTPBearer" in schema["components"]["securitySchemes"]
    for method, path in TICKET_ROUTES:
        operation = schema["paths"][path][method.lower()]
        assert operation["security"] == [{"HTTPBearer": []}], (method, path)
    for route in app.router.routes:
        if isinstance(route, APIRoute) and any(
            (m, route.path) in TICKET_ROUTES for m in route.methods
        ):
            assert route.dependant.dependencies == [], route.path
    admin = schema["paths"]["/v1/pools"]["get"]
    assert admin["security"] == [{"HTTPBearer": []}]
