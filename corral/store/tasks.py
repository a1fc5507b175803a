"""The tasks concept of the store: rows, the write operations, and the repository interface.

A task is saved as one row plus a stack of recovery rows. Writes are expressed as a sequence of
operations applied in one transaction (:meth:`TaskRepository.apply`), so the engine can commit a
state change together with a push or pop of a recovery. JSON columns travel as text: the engine
serialises once, the store never interprets them. This module must not do any I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class TaskProgress:
    """The part of a task row that changes while the task runs."""

    state: str
    jobs_done: int
    code: str
    message: str
    result: str
    """The task's result as JSON text."""
    updated_at: float


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One persisted task (without its recoveries)."""

    id: str
    verb: str
    tag: str
    priority: str
    recovery: str
    persist: str
    clean: str
    locks: str
    """The task's locks as JSON text: ``{"vm/a": "exclusive", ...}``."""
    jobs: str
    """The task's jobs as JSON text: ``[{"name": ..., "args": {...}}, ...]``."""
    created_at: float
    progress: TaskProgress


@dataclass(frozen=True, slots=True)
class RecoveryRow:
    """One entry of a task's recovery stack; ``position`` 0 is the bottom."""

    task_id: str
    position: int
    name: str
    args: str
    """The step's arguments as JSON text."""


@dataclass(frozen=True, slots=True)
class StoredTask:
    """A task row with its recovery stack, bottom first."""

    row: TaskRow
    recoveries: tuple[RecoveryRow, ...]


@dataclass(frozen=True, slots=True)
class InsertTask:
    """Create a task row. Fails with :class:`corral.exceptions.Conflict` if the id exists."""

    row: TaskRow


@dataclass(frozen=True, slots=True)
class UpdateTask:
    """Overwrite a task's progress. Fails with ``TaskNotFound`` if there is no such task."""

    task_id: str
    progress: TaskProgress


@dataclass(frozen=True, slots=True)
class PushRecovery:
    """Put a recovery on top of a task's stack (its position is the current stack size)."""

    row: RecoveryRow


@dataclass(frozen=True, slots=True)
class PopRecoveries:
    """Remove every recovery of a task at ``position >= keep``."""

    task_id: str
    keep: int


@dataclass(frozen=True, slots=True)
class DeleteTask:
    """Forget a task and its recoveries (a missing task is not an error)."""

    task_id: str


TaskOp: TypeAlias = InsertTask | UpdateTask | PushRecovery | PopRecoveries | DeleteTask
"""One write of :meth:`TaskRepository.apply`."""


class TaskRepository(Protocol):
    """Where tasks are persisted. Every implementation passes ``tests/store``'s contract suite."""

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        """Apply ``ops`` in order, in one transaction: all of them or, on error, none."""
        ...

    async def get(self, task_id: str) -> StoredTask | None:
        """The task with this id and its recoveries, or ``None``."""
        ...

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[TaskRow]:
        """Task rows, optionally filtered by state and tag, oldest first."""
        ...

    async def load_all(self) -> builtins.list[StoredTask]:
        """Every task with its recoveries, oldest first (used to recover on start)."""
        ...
