"""In-memory tasks repository (see :mod:`corral.store.tasks` for the contract).

Writes are validated before anything changes, so a failing ``apply`` leaves the data as it was,
as a rolled-back transaction would. Must not do I/O.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import replace

from corral import exceptions
from corral.store.tasks import (
    DeleteTask,
    InsertTask,
    PushRecovery,
    RecoveryRow,
    StoredTask,
    TaskOp,
    TaskRow,
    UpdateTask,
)


def _order(row: TaskRow) -> tuple[float, str]:
    return (row.created_at, row.id)


class _Overlay:
    """The changes of one ``apply``, kept aside until every operation has succeeded."""

    def __init__(self, repo: MemoryTaskRepository) -> None:
        self.repo = repo
        self.rows: dict[str, TaskRow | None] = {}  # None = deleted
        self.stacks: dict[str, list[RecoveryRow]] = {}

    def row(self, task_id: str) -> TaskRow | None:
        return self.rows[task_id] if task_id in self.rows else self.repo._rows.get(task_id)

    def stack(self, task_id: str) -> list[RecoveryRow]:
        if self.row(task_id) is None:
            raise exceptions.TaskNotFound(f"no task {task_id}")
        if task_id not in self.stacks:
            self.stacks[task_id] = list(self.repo._recoveries.get(task_id, ()))
        return self.stacks[task_id]

    def apply(self, op: TaskOp) -> None:
        if isinstance(op, InsertTask):
            if self.row(op.row.id) is not None:
                raise exceptions.Conflict(f"task {op.row.id} already exists")
            self.rows[op.row.id] = op.row
            self.stacks[op.row.id] = []
        elif isinstance(op, UpdateTask):
            row = self.row(op.task_id)
            if row is None:
                raise exceptions.TaskNotFound(f"no task {op.task_id}")
            self.rows[op.task_id] = replace(row, progress=op.progress)
        elif isinstance(op, DeleteTask):
            self.rows[op.task_id] = None
            self.stacks[op.task_id] = []
        elif isinstance(op, PushRecovery):
            stack, new = self.stack(op.row.task_id), op.row
            if any(r.position == new.position for r in stack):
                raise exceptions.Conflict(
                    f"task {new.task_id} already has a recovery at position {new.position}"
                )
            stack.append(new)
            stack.sort(key=lambda r: r.position)
        else:
            stack = self.stack(op.task_id)
            stack[:] = [r for r in stack if r.position < op.keep]

    def merge(self) -> None:
        repo = self.repo
        for task_id, row in self.rows.items():
            if row is None:
                repo._rows.pop(task_id, None)
                repo._recoveries.pop(task_id, None)
            else:
                repo._rows[task_id] = row
        for task_id, stack in self.stacks.items():
            if self.row(task_id) is not None:
                repo._recoveries[task_id] = stack


class MemoryTaskRepository:
    """Tasks in a dict, recoveries in per-task lists."""

    def __init__(self) -> None:
        self._rows: dict[str, TaskRow] = {}
        self._recoveries: dict[str, list[RecoveryRow]] = {}

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        """Apply ``ops`` atomically: nothing changes unless every operation succeeds."""
        overlay = _Overlay(self)
        for op in ops:
            overlay.apply(op)
        overlay.merge()

    async def get(self, task_id: str) -> StoredTask | None:
        """The task with this id and its recoveries, or ``None``."""
        row = self._rows.get(task_id)
        if row is None:
            return None
        return StoredTask(row, tuple(self._recoveries.get(task_id, ())))

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[TaskRow]:
        """Task rows, optionally filtered by state and tag, oldest first (ties by id, as in SQL)."""
        rows = sorted(self._rows.values(), key=_order)
        return [
            r
            for r in rows
            if (state is None or r.progress.state == state) and (tag is None or r.tag == tag)
        ]

    async def load_all(self) -> builtins.list[StoredTask]:
        """Every task with its recoveries, oldest first."""
        rows = sorted(self._rows.values(), key=_order)
        return [StoredTask(r, tuple(self._recoveries.get(r.id, ()))) for r in rows]
