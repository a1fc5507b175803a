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


class MemoryTaskRepository:
    """Tasks in a dict, recoveries in per-task lists; insertion order is creation order."""

    def __init__(self) -> None:
        self._rows: dict[str, TaskRow] = {}
        self._recoveries: dict[str, list[RecoveryRow]] = {}

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        """Apply ``ops`` atomically (copy-on-write, swapped in only if every op succeeds)."""
        rows = dict(self._rows)
        recs = {k: v for k, v in self._recoveries.items()}
        touched: set[str] = set()
        for op in ops:
            if isinstance(op, InsertTask):
                if op.row.id in rows:
                    raise exceptions.Conflict(f"task {op.row.id} already exists")
                rows[op.row.id] = op.row
                recs[op.row.id] = []
                touched.add(op.row.id)
            elif isinstance(op, UpdateTask):
                row = rows.get(op.task_id)
                if row is None:
                    raise exceptions.TaskNotFound(f"no task {op.task_id}")
                rows[op.task_id] = replace(row, progress=op.progress)
            elif isinstance(op, DeleteTask):
                rows.pop(op.task_id, None)
                recs.pop(op.task_id, None)
            else:
                task_id = op.row.task_id if isinstance(op, PushRecovery) else op.task_id
                if task_id not in rows:
                    raise exceptions.TaskNotFound(f"no task {task_id}")
                if task_id not in touched:
                    recs[task_id] = list(recs.get(task_id, ()))
                    touched.add(task_id)
                stack = recs[task_id]
                if isinstance(op, PushRecovery):
                    if any(r.position == op.row.position for r in stack):
                        raise exceptions.Conflict(
                            f"task {task_id} already has a recovery at position {op.row.position}"
                        )
                    stack.append(op.row)
                    stack.sort(key=lambda r: r.position)
                else:
                    stack[:] = [r for r in stack if r.position < op.keep]
        self._rows = rows
        self._recoveries = recs

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
