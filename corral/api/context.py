"""The per-app context the routes use: controller, authenticator, metrics, task and lock views.

The task and lock views adapt the task engine's ``TaskInfo`` and the lock manager's status records
to the wire models. This module must not decide anything: it translates.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral import wire as models
from corral.api.auth import Authenticator
from corral.api.convert import Addresses
from corral.api.facade import ControllerFacade
from corral.api.keys import TicketKeys
from corral.api.metrics import Metrics
from corral.locks.status import ResourceStatus, StatusSource
from corral.tasks import TaskEngine
from corral.tasks.model import TaskInfo


def task_model(info: TaskInfo) -> models.Task:
    """The wire form of a task engine's ``TaskInfo``."""
    return models.Task(
        id=info.id,
        verb=info.verb,
        state=info.state.value,
        tag=info.tag,
        priority=str(info.priority),
        code=info.code,
        message=info.message,
        result=info.result,
        recovery=str(info.recovery),
        persist=str(info.persist),
        clean=str(info.clean),
        jobs_done=info.jobs_done,
        jobs_total=info.jobs_total,
        jobs=list(info.jobs),
        recoveries=list(info.recoveries),
        locks={str(k): str(v) for k, v in info.locks.items()},
        created_at=info.created_at,
        updated_at=info.updated_at,
    )


def lock_model(status: ResourceStatus) -> models.LockStatus:
    """The wire form of one resource of ``LockManager.status()``."""
    return models.LockStatus(
        key=status.key,
        mode=None if status.mode is None else str(status.mode),
        token=status.token,
        holders=[
            models.LockHolder(owner=h.owner, mode=str(h.mode), since=h.since, token=h.token)
            for h in status.holders
        ],
        queue=[
            models.LockWaiter(owner=w.owner, mode=str(w.mode), since=w.since, upgrade=w.upgrade)
            for w in status.queue
        ],
    )


class TaskView:
    """The task engine's operations, returning wire models."""

    def __init__(self, engine: TaskEngine) -> None:
        self._engine = engine

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[models.Task]:
        """Tasks, optionally in one state or with one tag (``InvalidInput`` for a bad state)."""
        return [task_model(i) for i in self._engine.list(state=state, tag=tag)]

    async def states(self) -> Sequence[str]:
        """The state of every task (for the metrics)."""
        return [i.state.value for i in self._engine.list()]

    async def show(self, task_id: str) -> models.Task:
        """One task (``TaskNotFound`` otherwise)."""
        return task_model(self._engine.show(task_id))

    async def stop(self, task_id: str, *, force: bool = False) -> models.Task:
        """Stop a task."""
        return task_model(await self._engine.stop(task_id, force=force))

    async def rollback(self, task_id: str) -> models.Task:
        """Roll back a done task."""
        return task_model(await self._engine.rollback(task_id))

    async def clean(self, task_id: str) -> None:
        """Forget a done task."""
        await self._engine.clean(task_id)


class LockView:
    """The lock manager's status, as wire models."""

    def __init__(self, manager: StatusSource) -> None:
        self._manager = manager

    def status(self) -> list[models.LockStatus]:
        """Every locked or awaited resource."""
        return [lock_model(s) for s in self._manager.status()]


@dataclass(slots=True)
class Context:
    """Everything a route needs, created once per app."""

    controller: ControllerFacade
    auth: Authenticator
    tasks: TaskView
    locks: LockView
    metrics: Metrics
    keys: TicketKeys = field(default_factory=TicketKeys)
    addresses: Addresses = field(default_factory=Addresses)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the server begins to stop: long-polls answer at once (503 ``server_stopping``)."""
