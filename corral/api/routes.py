"""The ``/v1`` endpoints of SPEC §7: tickets, pools, VMs, tasks and locks.

Each handler authenticates the caller, applies the authorisation rules (users see and close only
their own tickets; pool, VM, task and lock operations need ``admin``), calls the controller facade
and renders the result with the wire models of :mod:`corral.wire`. Long-polls await the
controller's event-driven ``wait_ticket``: no thread is held while a client waits.

This module must not hold state of its own nor decide anything the controller decides.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from corral import exceptions
from corral import wire as models
from corral.api import convert, guard, keys
from corral.api.auth import ANONYMOUS, Principal
from corral.api.context import Context
from corral.api.errors import ERROR_RESPONSES
from corral.pools.model import Request as PoolRequest
from corral.pools.model import Ticket, TicketState, VMState

log = logging.getLogger(__name__)

MAX_WAIT = 300.0
"""Longest long-poll the server accepts, in seconds."""

_bearer = HTTPBearer(auto_error=False, description="A token from the config's api.tokens.")

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

Name = Annotated[str, Path(min_length=1, max_length=255)]


# Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in a thread
# pool, one thread hop per dependency per request.


async def context(request: Request) -> Context:
    """The application's context (controller, authenticator, metrics)."""
    ctx: Context = request.app.state.corral
    return ctx


async def principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The authenticated caller (``Unauthorized`` without a valid token)."""
    header = None if credentials is None else f"{credentials.scheme} {credentials.credentials}"
    return _authenticated(request, header)


def _authenticated(request: Request, header: str | None) -> Principal:
    """The caller the guard authenticated before reading the body, else the one of ``header``."""
    checked = guard.principal_of(request.scope)
    if checked is not None:
        return checked
    ctx: Context = request.app.state.corral
    return ctx.auth.authenticate(header)


def _call(request: Request) -> tuple[Context, Principal]:
    """The context and the caller of a ticket route, without FastAPI dependencies.

    The routes every client calls (create, read, renew, close a ticket) resolve these in one
    plain call: FastAPI solves each dependency per request, and ``context``, ``principal`` and
    the bearer scheme were about half of the CPU of an in-process ``GET /v1/tickets/{id}``
    (issue 14). ``BEARER`` puts the same security requirement in their OpenAPI operations.
    """
    ctx: Context = request.app.state.corral
    return ctx, _authenticated(request, request.headers.get("authorization"))


BEARER: dict[str, object] = {"security": [{"HTTPBearer": []}]}
"""The OpenAPI security requirement of a route that authenticates with :func:`_call`."""


Ctx = Annotated[Context, Depends(context)]
Caller = Annotated[Principal, Depends(principal)]


async def admin(request: Request, caller: Caller) -> Principal:
    """The caller, who must be an admin."""
    caller.require_admin(f"{request.method} {request.url.path}")
    return caller


Admin = Annotated[Principal, Depends(admin)]


# --- tickets -----------------------------------------------------------------------------------


async def _own_ticket(ctx: Context, caller: Principal, ticket_id: str) -> Ticket:
    ticket = await ctx.controller.get_ticket(ticket_id)
    if not caller.may_see(ticket.owner):
        # The same answer as for a missing id: a user must not learn which ids exist.
        raise exceptions.TicketNotFound(f"no ticket {ticket_id!r}")
    return ticket


def _renews(caller: Principal, ticket: Ticket) -> bool:
    """True when a call naming ``ticket`` renews its lease: the owner's own calls (every call on
    an open server), on an open ticket with a lease. An admin reading another owner's ticket
    does not keep it alive."""
    acting_owner = caller.owner is None or caller.owner == ticket.owner
    return acting_owner and ticket.open and ticket.ttl is not None


RENEW_SLACK = 30.0
"""A call's renewal is skipped when the lease was set less than a hundredth of the ticket's
``ttl`` ago, and less than this many seconds ago: the lease is then at most that much shorter
than the write would have made it, and a create followed by its long-poll costs one write, not
two (also when the long-poll reaches the route a second or more after the create, as it does
when 1,000 clients arrive within a second)."""


def renewal_due(ticket: Ticket, now: float) -> bool:
    """True when renewing ``ticket`` at ``now`` would extend its lease by more than the slack
    (:data:`RENEW_SLACK`, at most a hundredth of its ``ttl``)."""
    if ticket.ttl is None or ticket.expires_at is None:
        return ticket.ttl is not None
    slack = min(RENEW_SLACK, ticket.ttl / 100)
    return now + ticket.ttl - ticket.expires_at > slack


async def _renew(ctx: Context, ticket: Ticket) -> Ticket:
    """The ticket with its lease renewed; as it is now if it ended meanwhile. A renewal that
    would gain less than the slack (see :data:`RENEW_SLACK`) is skipped: no write."""
    if not renewal_due(ticket, ctx.controller.clock()):
        return ticket
    try:
        return await ctx.controller.renew_ticket(ticket.id, known=ticket)
    except exceptions.TicketClosed:
        return await ctx.controller.get_ticket(ticket.id)


async def _may_change(ctx: Context, caller: Principal, ticket_id: str) -> None:
    """Refuse a caller who may not change the ticket; the ticket is read only when the answer
    depends on its owner (a caller who sees every owner costs no read)."""
    if not caller.sees_all:
        await _own_ticket(ctx, caller, ticket_id)


WaitSeconds = Annotated[
    float,
    Query(ge=0, le=MAX_WAIT, description="Long-poll up to this many seconds for assignment."),
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="A key chosen by the client: a create repeated with the same key returns the "
        "first ticket, and GET /v1/tickets/by-key/{key} finds it (remembered for an hour).",
    ),
]


MIN_RENEW_PERIOD = 1.0
"""Shortest time between two renewals of a ticket during one long-poll, in seconds."""


def _arrival(request: Request) -> float:
    """The event loop's time the request arrived (at the guard; now if it did not pass it)."""
    arrived = guard.arrived_at(request.scope)
    return asyncio.get_running_loop().time() if arrived is None else arrived


async def _wait(
    ctx: Context, ticket: Ticket, wait: float, *, renew: bool, asked: float | None = None
) -> Ticket:
    """The ticket once it left ``waiting``, or as it is after ``wait`` seconds.

    ``asked`` is the loop time the request arrived (at the guard, before the routing, the
    parsing and the dependencies): the wait counts from then, so the work the request queued
    behind before waiting (others' requests under load, its read and renewal) does not make the
    answer later than ``wait`` (issue 8 item 3).

    With ``renew`` (the owner waits) the lease is renewed every third of it while the long-poll
    lasts, so a ticket never expires while its owner is waiting for it. When the server starts
    to stop, :class:`ServerStopping` is raised at once: the ticket is kept, the client asks
    again (or, after a restart, asks the next server).

    Only for a caller already allowed to see the ticket: the answer's timing tells when the
    ticket changed.
    """
    loop = asyncio.get_running_loop()
    deadline = (loop.time() if asked is None else asked) + wait
    period = None if not renew or ticket.ttl is None else max(MIN_RENEW_PERIOD, ticket.ttl / 3)
    stopping = asyncio.ensure_future(ctx.stopping.wait())
    try:
        while True:
            left = deadline - loop.time()
            if left <= 0:
                # nothing woke the waiter: on a store of its own the ticket is as last seen;
                # another process sharing the store may have changed it
                if not ctx.controller.shared_store:
                    return ticket
                return await ctx.controller.get_ticket(ticket.id)
            step = left if period is None else min(left, period)
            waiter = asyncio.ensure_future(ctx.controller.wait_ticket(ticket.id, timeout=step))
            try:
                await asyncio.wait({waiter, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not waiter.done():
                    waiter.cancel()
                    await asyncio.wait({waiter})
            if waiter.cancelled() or not waiter.done():
                raise exceptions.ServerStopping(
                    f"the server is stopping; ticket {ticket.id} is kept, ask again"
                )
            error = waiter.exception()
            if error is None:
                return waiter.result()
            if not isinstance(error, exceptions.TicketTimeout):
                raise error
            if period is not None and deadline - loop.time() > 0:
                ticket = await _renew(ctx, ticket)
                if ticket.state != TicketState.WAITING:
                    return ticket
    finally:
        stopping.cancel()


async def _disconnected(request: Request) -> None:
    """Return once the client has gone away (the request body was already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _abandon(ctx: Context, ticket_id: str) -> Ticket:
    """Close a ticket whose id never reached its creator: nobody else could close it."""
    return await ctx.controller.close_ticket(ticket_id)


async def _wait_created(
    request: Request, ctx: Context, ticket: Ticket, wait: float, asked: float
) -> Ticket:
    """Long-poll a ticket this request created. If the request is abandoned first (client gone,
    handler cancelled), the ticket is closed: its creator never learnt its id. If the server
    starts to stop, the ticket is answered as it is (still waiting), so its creator learns its
    id and waits for it on the next server."""
    ticket_id = ticket.id
    waiter = asyncio.ensure_future(_wait(ctx, ticket, wait, renew=True, asked=asked))
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        waiter.cancel()
        gone.cancel()
        if ctx.stopping.is_set():
            raise  # cut off by the shutdown: the client retries with its key, or the lease ends
        try:
            await asyncio.shield(_abandon(ctx, ticket_id))
        except exceptions.CorralError as exc:  # e.g. the store is closing: the lease reclaims it
            log.warning("cannot close abandoned ticket %s: %s", ticket_id, exc)
        raise
    if not gone.done():
        gone.cancel()
        try:
            return waiter.result()
        except exceptions.ServerStopping:
            return ticket
    waiter.cancel()
    await asyncio.wait({waiter})  # unlike awaiting it, never swallows a cancel of this request
    if not waiter.cancelled():
        waiter.exception()  # retrieved: the ticket is being given up whatever the wait found
    return await _abandon(ctx, ticket_id)


def _same_request(ticket: Ticket, body: models.TicketRequest) -> Ticket:
    asked = (body.pool, tuple(sorted(set(body.tags))), body.sandbox, body.priority, body.meta)
    known = (ticket.pool, tuple(sorted(ticket.tags)), ticket.sandbox, ticket.priority)
    shape = (body.count, body.exclusive) == (ticket.count, ticket.exclusive)
    if body.requests is not None or ticket.requests:
        shape = body.exclusive == ticket.exclusive and _entries(body) == ticket.requests
    if asked != (*known, dict(ticket.meta)) or not shape:
        raise exceptions.Conflict(
            f"header 'Idempotency-Key': already used for ticket {ticket.id}, another request"
        )
    return ticket


def _entries(body: models.TicketRequest) -> tuple[PoolRequest, ...] | None:
    """A list ticket's entries as the controller takes them (``None``: not a list ticket)."""
    if body.requests is None:
        return None
    return tuple(PoolRequest(e.pool, tuple(sorted(set(e.tags))), e.count) for e in body.requests)


async def _create(ctx: Context, owner: str, body: models.TicketRequest) -> Ticket:
    entries = _entries(body)
    single = entries is None  # the wire model refuses pool/tags/count beside requests
    ticket = await ctx.controller.create_ticket(
        owner=owner,
        pool=body.pool if single else None,
        tags=tuple(body.tags) if single else (),
        sandbox=body.sandbox,
        priority=body.priority,
        ttl=body.ttl,
        meta=body.meta or None,
        exclusive=body.exclusive,
        count=body.count if single else 1,
        requests=entries,
    )
    ctx.metrics.ticket_created()
    return ticket


async def _create_once(
    ctx: Context, owner: str, body: models.TicketRequest, key: str | None
) -> Ticket:
    """A new ticket; with ``key``, the one this owner already created with it, if any."""
    if key is None:
        return await _create(ctx, owner, body)
    known = await ctx.keys.lookup(owner, key)
    if known is not None:
        return _same_request(await ctx.controller.get_ticket(known), body)
    async with ctx.keys.creating(owner, key) as record:
        ticket = await _create(ctx, owner, body)
        try:
            winner = await record(ticket.id)
        except BaseException:
            # without its key nobody could find this ticket again: give it back
            await asyncio.shield(_abandon(ctx, ticket.id))
            raise
    if winner == ticket.id:
        return ticket
    await _abandon(ctx, ticket.id)  # another server took the same key first: one ticket only
    return _same_request(await ctx.controller.get_ticket(winner), body)


@router.post("/tickets", status_code=201, tags=["tickets"], openapi_extra=BEARER)
async def create_ticket(
    body: models.TicketRequest,
    request: Request,
    wait: WaitSeconds = 0,
    idempotency_key: IdempotencyKey = None,
) -> models.Ticket:
    """Ask for one VM, by pool or by tags (``count``: that many VMs of one pool, all together;
    ``exclusive``: whole VMs, on a pool whose VMs have several slots). With ``wait``, answer once
    it is assigned (or after ``wait`` seconds): creating and long-polling in one round trip. A
    client that goes away during that wait gets its ticket closed."""
    asked = _arrival(request)
    ctx, caller = _call(request)
    if body.requests is not None:
        if body.pool is not None or body.tags or body.count != 1:
            raise exceptions.InvalidInput(
                "body field 'requests': not with 'pool', 'tags' or 'count' (give each entry "
                "its own pool or tags and count)"
            )
        for i, entry in enumerate(body.requests):
            if (entry.pool is None) == (not entry.tags):
                raise exceptions.InvalidInput(
                    f"body field 'requests.{i}': give a pool or some tags (one of the two)"
                )
    elif body.pool is None and not body.tags:
        raise exceptions.InvalidInput("body field 'pool' or 'tags': give a pool or some tags")
    owner = caller.ticket_owner(body.owner)
    key = None if idempotency_key is None else keys.check_key(idempotency_key)
    ticket = await _create_once(ctx, owner, body, key)
    if wait > 0 and ticket.state == TicketState.WAITING:
        ticket = await _wait_created(request, ctx, ticket, wait, asked)
    return await convert.ticket(ctx.controller, ticket, ctx.addresses)


MetaPairs = Annotated[
    list[str] | None,
    Query(
        max_length=16,
        description="KEY=VALUE (repeatable): only tickets carrying every pair in their metadata.",
    ),
]


def _meta(pairs: list[str] | None, where: str) -> dict[str, str] | None:
    """``KEY=VALUE`` query values as a mapping (``InvalidInput`` naming a malformed one)."""
    if not pairs:
        return None
    found: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise exceptions.InvalidInput(f"query {where!r}: {pair!r} is not KEY=VALUE")
        found[key] = value
    return found


@router.get("/tickets", tags=["tickets"])
async def list_tickets(
    ctx: Ctx,
    caller: Caller,
    owner: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    state: Annotated[
        list[TicketState] | None, Query(description="Only tickets in these states (repeatable).")
    ] = None,
    meta: MetaPairs = None,
    limit: Annotated[
        int | None, Query(ge=1, le=100_000, description="At most this many (the first ones).")
    ] = None,
) -> list[models.Ticket]:
    """Tickets by priority then age, optionally of one owner, in some states, carrying some
    metadata, and at most ``limit`` of them. Users see only their own."""
    if caller.owner is not None and not caller.admin:
        if owner is not None and owner != caller.owner:
            raise exceptions.Forbidden("a user token sees only its own tickets")
        owner = caller.owner
    pairs = _meta(meta, "meta")
    states: list[TicketState | None] = list(dict.fromkeys(state)) if state else [None]
    found: list[Ticket] = []
    for one in states:
        found += await ctx.controller.list_tickets(owner=owner, state=one, meta=pairs)
    if len(states) > 1:
        found.sort(key=lambda t: (-t.priority, t.seq))
    if limit is not None:
        found = found[:limit]
    return await convert.tickets(ctx.controller, found, ctx.addresses)


@router.get("/tickets/by-key/{key}", tags=["tickets"])
async def find_ticket(
    key: Annotated[str, Path(min_length=1, max_length=128)],
    ctx: Ctx,
    caller: Caller,
    owner: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> models.Ticket:
    """The ticket created with ``Idempotency-Key: key`` by ``owner`` (by default the caller):
    how a client interrupted before it saw its create's answer finds the ticket to close."""
    ticket_owner = caller.ticket_owner(owner)
    ticket_id = await ctx.keys.lookup(ticket_owner, key)
    if ticket_id is None:
        raise exceptions.TicketNotFound(f"no ticket of {ticket_owner!r} was created with this key")
    ticket = await ctx.controller.get_ticket(ticket_id)
    return await convert.ticket(ctx.controller, ticket, ctx.addresses)


@router.get("/tickets/{ticket_id}", tags=["tickets"], openapi_extra=BEARER)
async def get_ticket(ticket_id: Name, request: Request, wait: WaitSeconds = 0) -> models.Ticket:
    """One ticket; with ``wait``, answers as soon as it is assigned (or ends), or after ``wait``.

    The owner's call renews the ticket's lease (and keeps renewing it while it long-polls); an
    admin reading another owner's ticket does not. A long-poll on a stopping server answers 503
    ``server_stopping`` with ``Retry-After``; the ticket is kept."""
    asked = _arrival(request)
    ctx, caller = _call(request)
    ticket = await _own_ticket(ctx, caller, ticket_id)  # before waiting: a refusal is immediate
    renew = _renews(caller, ticket)
    if renew:
        ticket = await _renew(ctx, ticket)
    if wait > 0 and ticket.state == TicketState.WAITING:
        ticket = await _wait(ctx, ticket, wait, renew=renew, asked=asked)
    return await convert.ticket(ctx.controller, ticket, ctx.addresses)


@router.post("/tickets/{ticket_id}/renew", tags=["tickets"], openapi_extra=BEARER)
async def renew_ticket(ticket_id: Name, request: Request) -> models.Ticket:
    """Extend the ticket's lease by its ttl."""
    ctx, caller = _call(request)
    await _may_change(ctx, caller, ticket_id)
    ticket = await ctx.controller.renew_ticket(ticket_id)
    return await convert.ticket(ctx.controller, ticket, ctx.addresses)


@router.post("/tickets/{ticket_id}/close", tags=["tickets"], openapi_extra=BEARER)
async def close_ticket(ticket_id: Name, request: Request) -> models.Ticket:
    """Close the ticket: its VM is reused or terminated; a waiting ticket is cancelled."""
    ctx, caller = _call(request)
    await _may_change(ctx, caller, ticket_id)
    ticket = await ctx.controller.close_ticket(ticket_id)
    return await convert.ticket(ctx.controller, ticket, ctx.addresses)


# --- pools and VMs -----------------------------------------------------------------------------


@router.get("/pools", tags=["pools"])
async def list_pools(ctx: Ctx, caller: Admin) -> list[models.PoolStatus]:
    """Every pool: limits, VMs per state, queue and statistics."""
    return [convert.pool(p) for p in await ctx.controller.list_pools()]


@router.get("/pools/{name}", tags=["pools"])
async def get_pool(name: Name, ctx: Ctx, caller: Admin) -> models.PoolStatus:
    """One pool."""
    return convert.pool(await ctx.controller.get_pool(name))


@router.get("/vms", tags=["vms"])
async def list_vms(
    ctx: Ctx,
    caller: Admin,
    pool: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    state: VMState | None = None,
    ticket_meta: Annotated[
        list[str] | None,
        Query(
            max_length=16,
            description="KEY=VALUE (repeatable): only VMs held by open tickets carrying every "
            "pair (Copr's lookup of a build's VM).",
        ),
    ] = None,
) -> list[models.VM]:
    """VMs, optionally of one pool, in one state, or held by tickets with some metadata."""
    if pool is not None:
        await ctx.controller.get_pool(pool)  # PoolNotFound rather than an empty list
    pairs = _meta(ticket_meta, "ticket_meta")
    if pairs is not None:
        found = await ctx.controller.find_vms(
            pool=pool, states=None if state is None else [state.value], ticket_meta=pairs
        )
        return [convert.vm(v) for v in found]
    return [convert.vm(v) for v in await ctx.controller.list_vms(pool=pool, state=state)]


@router.get("/vms/{name}", tags=["vms"])
async def get_vm(name: Name, ctx: Ctx, caller: Admin) -> models.VM:
    """One VM."""
    return convert.vm(await ctx.controller.get_vm(name))


@router.post("/vms/{name}/terminate", tags=["vms"])
async def terminate_vm(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    if_state: Annotated[
        list[str] | None,
        Query(
            max_length=16,
            description="Only if the VM is in one of these states (repeatable or "
            "comma-separated); otherwise 409 vm_state_mismatch and nothing changes.",
        ),
    ] = None,
) -> models.VM:
    """Terminate a VM, also one still spawning; a ticket holding it fails."""
    who = caller.owner or ANONYMOUS  # recorded in the audit trail
    if if_state is None:
        return convert.vm(await ctx.controller.terminate_vm(name, actor=who))
    states = [s.strip() for value in if_state for s in value.split(",")]
    return convert.vm(await ctx.controller.terminate_vm(name, if_states=states, actor=who))


@router.post("/pools/{name}/terminate", tags=["pools"])
async def terminate_pool_vms(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    state: Annotated[
        list[str] | None,
        Query(
            max_length=16, description="Only VMs in these states (repeatable or comma-separated)."
        ),
    ] = None,
    unused: Annotated[bool, Query(description="Only VMs that never served a ticket.")] = False,
    dry_run: Annotated[bool, Query(description="Say which VMs, change nothing.")] = False,
) -> list[models.VM]:
    """Terminate a pool's VMs in bulk (all alive ones, by state, or the unused ones)."""
    states = None if state is None else [s.strip() for v in state for s in v.split(",")]
    found = await ctx.controller.terminate_vms(
        pool=name,
        states=states,
        unused=unused,
        actor=caller.owner or ANONYMOUS,
        dry_run=dry_run,
    )
    return [convert.vm(vm) for vm in found]


@router.get("/summary", tags=["pools"])
async def summary(
    ctx: Ctx,
    caller: Admin,
    pool: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> models.PoolSummary:
    """Every pool (or one) and its live VMs as human-readable text, failing pools marked."""
    return models.PoolSummary(text=await ctx.controller.summary(pool=pool))


# --- tasks and locks ---------------------------------------------------------------------------


@router.get("/tasks", tags=["tasks"])
async def list_tasks(
    ctx: Ctx,
    caller: Admin,
    state: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    tag: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
) -> list[models.Task]:
    """Tasks of the engine, optionally in one state or with one tag."""
    return await ctx.tasks.list(state=state, tag=tag)


@router.get("/tasks/{task_id}", tags=["tasks"])
async def get_task(task_id: Name, ctx: Ctx, caller: Admin) -> models.Task:
    """One task: state, result, jobs done of total, recoveries."""
    return await ctx.tasks.show(task_id)


@router.post("/tasks/{task_id}/stop", tags=["tasks"])
async def stop_task(
    task_id: Name,
    ctx: Ctx,
    caller: Admin,
    force: Annotated[bool, Query(description="Also abort a task in recovery.")] = False,
) -> models.Task:
    """Stop a task; its recovery policy decides what follows."""
    return await ctx.tasks.stop(task_id, force=force)


@router.post("/tasks/{task_id}/rollback", tags=["tasks"])
async def rollback_task(task_id: Name, ctx: Ctx, caller: Admin) -> models.Task:
    """Roll back a done task (manual recovery)."""
    return await ctx.tasks.rollback(task_id)


@router.delete("/tasks/{task_id}", status_code=204, tags=["tasks"])
async def clean_task(task_id: Name, ctx: Ctx, caller: Admin) -> Response:
    """Forget a done task."""
    await ctx.tasks.clean(task_id)
    return Response(status_code=204)


@router.get("/locks", tags=["locks"])
async def list_locks(ctx: Ctx, caller: Admin) -> list[models.LockStatus]:
    """Every locked or awaited resource: mode, holders (with fencing tokens) and queue."""
    return ctx.locks.status()
