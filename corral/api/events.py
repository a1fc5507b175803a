"""``GET /v1/events``: the event stream as server-sent events (see :mod:`corral.api.stream`).

This module must not number or filter events itself: :class:`~corral.api.stream.EventHub` does.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from corral.api import stream
from corral.api.auth import Principal
from corral.api.context import Context
from corral.api.errors import ERROR_RESPONSES
from corral.api.routes import Caller, Ctx

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)

HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
"""Headers of a stream: no cache, no proxy buffering."""


def hub_of(request: Request) -> stream.EventHub:
    """The app's event hub."""
    hub: stream.EventHub = request.app.state.corral_events
    return hub


async def _until_stopped(
    listener: stream.Listener, stopping: asyncio.Event
) -> AsyncIterator[bytes]:
    watcher = asyncio.get_running_loop().create_task(stopping.wait())
    watcher.add_done_callback(lambda _: listener.close())
    try:
        yield b"retry: 2000\n\n"
        async for frame in listener.frames():
            yield frame
    finally:
        watcher.cancel()


def respond(
    request: Request,
    ctx: Context,
    caller: Principal,
    last_event_id: str | None,
    kinds: str | None,
) -> StreamingResponse:
    """The stream of ``caller`` as a streaming response (shared with the dashboard's stream)."""
    wanted = stream.parse_kinds(kinds)
    last = stream.parse_last_id(last_event_id)
    listener = hub_of(request).listen(caller, last_id=last, kinds=wanted)
    return StreamingResponse(
        _until_stopped(listener, ctx.stopping),
        media_type="text/event-stream",
        headers=HEADERS,
    )


@router.get(
    "/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "Server-sent events."}},
)
async def events(
    request: Request,
    ctx: Ctx,
    caller: Caller,
    last_event_id: Annotated[str | None, Header(max_length=40)] = None,
    kinds: Annotated[
        str | None, Query(max_length=100, description="Comma-separated: ticket, vm, task, pool.")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=40, description="Like Last-Event-ID, for clients without it.")
    ] = None,
) -> StreamingResponse:
    """Ticket, VM, task and pool changes as they happen, each with an increasing ``id``.

    Reconnect with ``Last-Event-ID`` to get what was missed, or a ``resync`` event when it is no
    longer kept. A user token sees its own tickets' events and ``pool`` counts; an admin sees all.
    A client too slow to keep up gets a ``dropped`` event with the reason and the stream ends.
    """
    return respond(request, ctx, caller, last_event_id or since, kinds)
