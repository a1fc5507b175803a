"""The dashboard's admin actions on pools and tasks, each behind a confirmation page, and the
hosts page.

Every action is two requests, as terminating a VM is (:mod:`corral.api.ui.pages`): a GET that
shows what will happen (a drain lists the idle VMs it would terminate now) and a form whose
POST must name the object again (``confirm``), so neither a stray click nor a link from another
site changes anything (the request guard also refuses a POST from another site). Pool actions
are recorded in the audit trail under the session's owner. This module must not decide
anything: it asks the controller and the task engine.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from corral import exceptions
from corral.api import hosts as cluster
from corral.api.auth import Principal
from corral.api.ui.pages import _ctx, _form, _render, caller

router = APIRouter(prefix="/ui", include_in_schema=False)

Name = Annotated[str, Path(min_length=1, max_length=255)]

POOL_ACTIONS = {
    "pause": (
        "Pause",
        "stops preallocating: no new VM is spawned; its ready VMs still serve tickets.",
    ),
    "resume": ("Resume", "undoes a pause or a drain: the pool preallocates and reuses again."),
    "drain": (
        "Drain",
        "stops preallocating, terminates its idle VMs now and every VM in use once its ticket "
        "ends, and reuses nothing.",
    ),
}
"""The pool actions: their button's verb and what they do."""

TASK_ACTIONS = {
    "stop": ("Stop", "stops the task; its recovery policy decides what follows."),
    "rollback": ("Roll back", "runs the recoveries of a finished task, newest first."),
}
"""The task actions: their button's verb and what they do."""


def _admin(request: Request, what: str) -> Principal:
    who = caller(request)
    who.require_admin(what)
    return who


def _action(known: dict[str, tuple[str, str]], action: str, kind: str) -> tuple[str, str]:
    found = known.get(action)
    if found is None:
        raise exceptions.NotFound(f"no {kind} action {action!r} (known: {', '.join(known)})")
    return found


async def _confirmed(request: Request, name: str) -> None:
    form = await _form(request)
    if form.get("confirm") != name:
        raise exceptions.InvalidInput(f"the confirmation does not name {name!r}")


# --- pools -------------------------------------------------------------------------------------


@router.get("/pools/{name}/{action}", response_class=HTMLResponse)
async def confirm_pool(request: Request, name: Name, action: str) -> Response:
    """Ask before pausing, resuming or draining a pool (a drain lists what it would do)."""
    verb, effect = _action(POOL_ACTIONS, action, "pool")
    who = _admin(request, f"{action} a pool")
    controller = _ctx(request).controller
    status = await controller.get_pool(name)
    idle = await controller.drain_pool(name, dry_run=True) if action == "drain" else []
    return _render(
        request,
        "confirm_action.html",
        who,
        title=f"{verb} pool {name}?",
        detail=f"Pool {name} is {status.mode}. {verb} {effect}",
        items=[f"{vm.name} ({vm.state.value}) would be terminated now" for vm in idle],
        target=f"/ui/pools/{quote(name, safe='')}/{action}",
        name=name,
        button=f"{verb} {name}",
        button_id=f"confirm-{action}",
        cancel="/ui/pools",
    )


@router.post("/pools/{name}/{action}")
async def act_on_pool(request: Request, name: Name, action: str) -> Response:
    """Pause, resume or drain the pool (after the confirmation page's form)."""
    _action(POOL_ACTIONS, action, "pool")
    who = _admin(request, f"{action} a pool")
    await _confirmed(request, name)
    controller = _ctx(request).controller
    actor = who.owner or "dashboard"
    if action == "pause":
        await controller.pause_pool(name, actor=actor)
    elif action == "resume":
        await controller.resume_pool(name, actor=actor)
    else:
        await controller.drain_pool(name, actor=actor)
    return RedirectResponse("/ui/pools", status_code=303)


# --- tasks -------------------------------------------------------------------------------------


@router.get("/tasks/{task_id}/{action}", response_class=HTMLResponse)
async def confirm_task(request: Request, task_id: Name, action: str) -> Response:
    """Ask before stopping or rolling back a task."""
    verb, effect = _action(TASK_ACTIONS, action, "task")
    who = _admin(request, f"{action} a task")
    task = await _ctx(request).tasks.show(task_id)
    return _render(
        request,
        "confirm_action.html",
        who,
        title=f"{verb} task {task_id}?",
        detail=f"Task {task_id} ({task.verb}, {task.tag or 'no tag'}) is {task.state}, job "
        f"{task.jobs_done} of {task.jobs_total}. {verb} {effect}",
        items=[],
        target=f"/ui/tasks/{quote(task_id, safe='')}/{action}",
        name=task_id,
        button=f"{verb} task",
        button_id=f"confirm-{action}",
        cancel="/ui/tasks",
    )


@router.post("/tasks/{task_id}/{action}")
async def act_on_task(request: Request, task_id: Name, action: str) -> Response:
    """Stop or roll back the task (after the confirmation page's form)."""
    _action(TASK_ACTIONS, action, "task")
    _admin(request, f"{action} a task")
    await _confirmed(request, task_id)
    tasks = _ctx(request).tasks
    if action == "stop":
        await tasks.stop(task_id)
    else:
        await tasks.rollback(task_id)
    return RedirectResponse("/ui/tasks", status_code=303)


# --- hosts -------------------------------------------------------------------------------------


@router.get("/hosts", response_class=HTMLResponse)
async def hosts(request: Request) -> Response:
    """The cluster's hosts (``GET /v1/hosts``); a single host says so."""
    who = _admin(request, "the hosts page")
    controller = _ctx(request).controller
    found = []
    if isinstance(controller, cluster.HostSource):
        found = [cluster.host(view) for view in await controller.list_hosts()]
    return _render(request, "hosts.html", who, hosts=found)
