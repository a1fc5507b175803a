"""The dashboard's routes: login, the pages, the confirmed admin action and the live stream.

Authentication: on a server with tokens, the login form turns a token into a session cookie
(:mod:`corral.api.ui.session`); pages without a session redirect to the login form. Users see
pools (counts and statistics) and their own tickets; VMs, tasks and locks need an admin. A page
fetched with ``X-Fragment: 1`` returns only its ``<main>`` (the live update). State changes are
POST forms: the request guard refuses them from another site and the cookie is SameSite=Strict.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Annotated
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from corral import exceptions
from corral.api import events, stream
from corral.api.auth import Principal
from corral.api.context import Context, task_model
from corral.api.ui import charts
from corral.api.ui.session import COOKIE, LIFETIME, Sessions
from corral.pools.model import TicketState, VMState
from corral.tasks.states import DONE, TaskState

if TYPE_CHECKING:
    from fastapi.templating import Jinja2Templates

router = APIRouter(prefix="/ui", include_in_schema=False)


@cache
def _templates() -> Jinja2Templates:
    """The pages' templates, loaded on the first page served: importing Jinja2 is about a
    tenth of ``corral serve``'s start-up, which the API does not need (issue 14)."""
    from fastapi.templating import Jinja2Templates

    return Jinja2Templates(directory=str(resources.files("corral.api.ui") / "templates"))


Name = Annotated[str, Path(min_length=1, max_length=255)]

SPAWN_SAMPLES = 200
"""Spawn times the histogram shows."""

COMMANDS = 50
"""Backend commands the VM page shows (the oldest first: the spawn is what fails)."""


STOPPABLE = frozenset(s.value for s in TaskState if s not in DONE)
"""Task states a stop applies to (the tasks page offers it)."""

ROLLBACKABLE = frozenset({TaskState.FINISHED.value, TaskState.WAITRECOVER.value})
"""Task states a rollback applies to (the tasks page offers it)."""


class LoginRequired(Exception):
    """The page needs a session (redirect to the login form)."""


def _ctx(request: Request) -> Context:
    ctx: Context = request.app.state.corral
    return ctx


def sessions(request: Request) -> Sessions:
    """The app's dashboard sessions."""
    found: Sessions = request.app.state.corral_sessions
    return found


def caller(request: Request) -> Principal:
    """The dashboard user: everyone on an open server, else the session's caller."""
    ctx = _ctx(request)
    if ctx.auth.open:
        return ctx.auth.authenticate(None)
    principal = sessions(request).get(request.cookies.get(COOKIE))
    if principal is None:
        raise LoginRequired
    return principal


def _render(
    request: Request, template: str, who: Principal, status: int = 200, **values: object
) -> HTMLResponse:
    fragment = request.headers.get("x-fragment") == "1"
    response = _templates().TemplateResponse(
        request,
        template,
        {
            "who": who,
            "open": _ctx(request).auth.open,
            "fragment": fragment,
            "page": template.removesuffix(".html"),
            "now": time.time(),
            **values,
        },
        status_code=status,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


async def _form(request: Request) -> dict[str, str]:
    body = (await request.body()).decode("utf-8", "replace")
    return {k: v[0] for k, v in parse_qs(body, max_num_fields=10).items()}


def _login_redirect(request: Request) -> RedirectResponse:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/ui/login?next={target}", status_code=303)


def _safe_next(target: str | None) -> str:
    """Only a dashboard path (never another site) after logging in."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/pools"


# --- login -------------------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str | None = None) -> Response:
    """The token form."""
    return _templates().TemplateResponse(
        request, "login.html", {"next": _safe_next(next), "error": None, "who": None}
    )


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    """Check the token and open a session (HttpOnly, SameSite=Strict cookie)."""
    form = await _form(request)
    target = _safe_next(form.get("next"))
    try:
        principal = _ctx(request).auth.authenticate(f"Bearer {form.get('token', '')}")
    except exceptions.Unauthorized:
        return _templates().TemplateResponse(
            request,
            "login.html",
            {"next": target, "error": "That token is not valid.", "who": None},
            status_code=401,
        )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        sessions(request).open(principal),
        max_age=int(LIFETIME),
        path="/ui",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session."""
    sessions(request).close(request.cookies.get(COOKIE))
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# --- pages -------------------------------------------------------------------------------------


@router.get("", response_class=RedirectResponse)
@router.get("/", response_class=RedirectResponse)
async def home() -> RedirectResponse:
    """The pools page."""
    return RedirectResponse("/ui/pools", status_code=303)


@router.get("/pools", response_class=HTMLResponse)
async def pools(request: Request) -> Response:
    """Every pool: VMs per state, limits, queue, spawn statistics, the last hour's chart."""
    who = caller(request)
    ctx = _ctx(request)
    hub: stream.EventHub = request.app.state.corral_events
    rows = []
    for status in await ctx.controller.list_pools():
        points = [
            (
                p.at,
                {
                    VMState.READY.value: p.ready,
                    VMState.IN_USE.value: p.in_use,
                    VMState.SPAWNING.value: p.spawning,
                },
            )
            for p in hub.series(status.name)
        ]
        times = await ctx.controller.store.pools.samples(
            status.name, "spawn_time", limit=SPAWN_SAMPLES
        )
        rows.append(
            {
                "status": status,
                "bar": charts.state_bar(status.vms),
                "chart": charts.line_chart(points),
                "histogram": charts.histogram(times),
            }
        )
    return _render(request, "pools.html", who, pools=rows, colours=charts.STATE_COLOURS)


@router.get("/vms", response_class=HTMLResponse)
async def vms(
    request: Request,
    pool: Annotated[str | None, Query(max_length=255)] = None,
    state: Annotated[str | None, Query(max_length=32)] = None,
    owner: Annotated[str | None, Query(max_length=255)] = None,
) -> Response:
    """VMs, filtered by pool, state and the owner of the ticket holding them."""
    who = caller(request)
    who.require_admin("the VMs page")
    ctx = _ctx(request)
    pool = pool or None
    state = state or None
    owner = owner or None
    if state is not None and state not in {s.value for s in VMState}:
        raise exceptions.InvalidInput(f"unknown VM state {state!r}")
    if pool is not None:
        await ctx.controller.get_pool(pool)
    holders = {
        t.vm: t.owner
        for t in await ctx.controller.list_tickets(state=TicketState.ASSIGNED.value)
        if t.vm
    }
    found = [
        (vm, holders.get(vm.name))
        for vm in await ctx.controller.list_vms(pool=pool, state=state)
        if owner is None or holders.get(vm.name) == owner
    ]
    return _render(
        request,
        "vms.html",
        who,
        vms=found,
        pools=[p.name for p in await ctx.controller.list_pools()],
        states=[s.value for s in VMState],
        filters={"pool": pool or "", "state": state or "", "owner": owner or ""},
    )


@router.get("/vms/{name}", response_class=HTMLResponse)
async def vm(request: Request, name: Name) -> Response:
    """One VM: its state, failure reason, ticket."""
    who = caller(request)
    who.require_admin("the VM page")
    ctx = _ctx(request)
    found = await ctx.controller.get_vm(name)
    repository = ctx.controller.store.command_logs
    commands = [] if repository is None else await repository.for_vm(name, limit=COMMANDS)
    return _render(request, "vm.html", who, vm=found, commands=commands)


@router.get("/vms/{name}/terminate", response_class=HTMLResponse)
async def confirm_terminate(request: Request, name: Name) -> Response:
    """Ask before terminating a VM."""
    who = caller(request)
    who.require_admin("terminating a VM")
    found = await _ctx(request).controller.get_vm(name)
    return _render(request, "confirm.html", who, vm=found)


@router.post("/vms/{name}/terminate")
async def terminate(request: Request, name: Name) -> Response:
    """Terminate the VM (after the confirmation page's form)."""
    who = caller(request)
    who.require_admin("terminating a VM")
    form = await _form(request)
    if form.get("confirm") != name:
        raise exceptions.InvalidInput("the confirmation does not name this VM")
    await _ctx(request).controller.terminate_vm(name)
    return RedirectResponse(f"/ui/vms/{quote(name)}", status_code=303)


@router.get("/tickets", response_class=HTMLResponse)
async def tickets(request: Request) -> Response:
    """The open tickets (a user's own only), with their wait times."""
    who = caller(request)
    ctx = _ctx(request)
    owner = None if who.sees_all else who.owner
    rows = [
        t
        for state in (TicketState.WAITING, TicketState.ASSIGNED)
        for t in await ctx.controller.list_tickets(owner=owner, state=state.value)
    ]
    rows.sort(key=lambda t: (t.state != TicketState.WAITING, -t.priority, t.created_at))
    return _render(request, "tickets.html", who, tickets=rows)


@router.get("/tasks", response_class=HTMLResponse)
async def tasks(request: Request) -> Response:
    """The task engine's tasks: state, job i of n, recoveries."""
    who = caller(request)
    who.require_admin("the tasks page")
    rows = [task_model(i) for i in _ctx(request).controller.tasks.list()]
    rows.sort(key=lambda t: -(t.updated_at or 0.0))
    return _render(
        request, "tasks.html", who, tasks=rows, stoppable=STOPPABLE, rollbackable=ROLLBACKABLE
    )


@router.get("/locks", response_class=HTMLResponse)
async def locks(request: Request) -> Response:
    """Every locked or awaited resource."""
    who = caller(request)
    who.require_admin("the locks page")
    return _render(request, "locks.html", who, locks=_ctx(request).locks.status())


@router.get("/events")
async def live(
    request: Request,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
) -> StreamingResponse:
    """The event stream of the session's caller (EventSource cannot send a bearer token)."""
    return events.respond(request, _ctx(request), caller(request), last_event_id, None)


def error_page(request: Request, exc: exceptions.CorralError) -> Response:
    """A readable error page for a dashboard request."""
    try:
        who: Principal | None = caller(request)
    except LoginRequired:
        who = None
    return _templates().TemplateResponse(
        request,
        "error.html",
        {"who": who, "error": exc, "fragment": False, "page": "error", "open": False},
        status_code=exc.http_status,
    )


def login_required(request: Request, exc: Exception) -> Response:
    """Pages redirect to the login form; the stream answers 401."""
    if request.url.path == "/ui/events":
        return Response(status_code=401)
    return _login_redirect(request)
