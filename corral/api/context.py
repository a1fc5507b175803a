"""The per-app context the routes use: controller, authenticator, metrics, task and lock views.

The task and lock views adapt the task engine's ``TaskInfo`` and the lock manager's status records
to the wire models. This module must not decide anything: it translates.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral import exceptions
from corral.api.auth import Authenticator
from corral.api.facade import ControllerFacade
from corral.api.metrics import Metrics
from corral.client import models
from corral.types import JSON


async def _resolve(value: Any) -> Any:
    # The engine's read methods may be sync (in-memory state) or async (store-backed).
    if inspect.isawaitable(value):
        return await value
    return value


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def _json(value: object) -> JSON:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    return str(value)


def task_model(info: object) -> models.Task:
    """The wire form of a task engine's ``TaskInfo``."""
    recoveries = getattr(info, "recoveries", ()) or ()
    return models.Task(
        id=str(getattr(info, "id", "")),
        verb=str(getattr(info, "verb", getattr(info, "name", ""))),
        state=str(getattr(info, "state", "")),
        tag=_text(getattr(info, "tag", None)),
        priority=_text(getattr(info, "priority", None)),
        code=getattr(info, "code", None),
        message=_text(getattr(info, "message", None)),
        result=_json(getattr(info, "result", None)),
        jobs_done=getattr(info, "jobs_done", None),
        jobs_total=getattr(info, "jobs_total", None),
        recoveries=[str(getattr(r, "name", r)) for r in recoveries],
    )


def lock_model(status: object) -> models.LockStatus:
    """The wire form of one resource of ``LockManager.status()``."""
    holders = [
        models.LockHolder(
            owner=str(getattr(h, "owner", "")),
            mode=_text(getattr(h, "mode", None)),
            since=getattr(h, "since", None),
            token=getattr(h, "token", None),
        )
        for h in getattr(status, "holders", ()) or ()
    ]
    queue = [
        models.LockWaiter(
            owner=str(getattr(w, "owner", "")),
            mode=str(getattr(w, "mode", "")),
            since=getattr(w, "since", None),
        )
        for w in getattr(status, "queue", ()) or ()
    ]
    return models.LockStatus(
        key=str(getattr(status, "key", "")),
        mode=_text(getattr(status, "mode", None)),
        holders=holders,
        queue=queue,
    )


class TaskView:
    """The task engine's operations, returning wire models."""

    def __init__(self, engine: object) -> None:
        self._engine: Any = engine

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[models.Task]:
        """Tasks, optionally in one state or with one tag."""
        infos = await _resolve(self._engine.list(state=state, tag=tag))
        return [task_model(i) for i in infos]

    async def states(self) -> Sequence[str]:
        """The state of every task (for the metrics)."""
        return [t.state for t in await self.list()]

    async def show(self, task_id: str) -> models.Task:
        """One task."""
        info = await _resolve(self._engine.show(task_id))
        if info is None:
            raise exceptions.TaskNotFound(f"no task with id {task_id!r}")
        return task_model(info)

    async def stop(self, task_id: str, *, force: bool = False) -> models.Task:
        """Stop a task."""
        await self.show(task_id)
        await _resolve(self._engine.stop(task_id, force=force))
        return await self.show(task_id)

    async def rollback(self, task_id: str) -> models.Task:
        """Roll back a done task."""
        await self.show(task_id)
        await _resolve(self._engine.rollback(task_id))
        return await self.show(task_id)

    async def clean(self, task_id: str) -> None:
        """Forget a done task."""
        await self.show(task_id)
        await _resolve(self._engine.clean(task_id))


@dataclass(slots=True)
class Context:
    """Everything a route needs, created once per app."""

    controller: ControllerFacade
    auth: Authenticator
    tasks: TaskView
    lock_manager: object
    metrics: Metrics

    def locks(self) -> list[models.LockStatus]:
        """Every locked or awaited resource."""
        manager: Any = self.lock_manager
        return [lock_model(s) for s in manager.status()]
