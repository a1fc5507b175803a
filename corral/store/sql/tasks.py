"""SQL tasks repository: every query of the tasks concept, named, with bound parameters only.

The statements are built once at import; SQLAlchemy caches their compiled form, so a commit
costs the driver round trips and little else. Must not be called from the event loop thread
directly: everything goes through :class:`~corral.store.sql.executor.SqlExecutor`.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from corral import exceptions
from corral.store.sql.executor import SqlExecutor
from corral.store.sql.schema_tasks import task_recoveries, tasks
from corral.store.tasks import (
    InsertTask,
    PopRecoveries,
    PushRecovery,
    RecoveryRow,
    StoredTask,
    TaskOp,
    TaskProgress,
    TaskRow,
    UpdateTask,
)

# --- the named queries ---------------------------------------------------------------------

INSERT_TASK = insert(tasks)
UPDATE_PROGRESS = (
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        jobs_done=bindparam("jobs_done"),
        code=bindparam("code"),
        message=bindparam("message"),
        result=bindparam("result"),
        updated_at=bindparam("updated_at"),
    )
)
INSERT_RECOVERY = insert(task_recoveries)
POP_RECOVERIES = delete(task_recoveries).where(
    task_recoveries.c.task_id == bindparam("b_task_id"),
    task_recoveries.c.position >= bindparam("b_keep"),
)
TASK_EXISTS = select(tasks.c.id).where(tasks.c.id == bindparam("b_id"))
DELETE_RECOVERIES = delete(task_recoveries).where(
    task_recoveries.c.task_id == bindparam("b_task_id")
)
DELETE_TASK = delete(tasks).where(tasks.c.id == bindparam("b_id"))
SELECT_TASK = select(tasks).where(tasks.c.id == bindparam("b_id"))
SELECT_RECOVERIES_OF = (
    select(task_recoveries)
    .where(task_recoveries.c.task_id == bindparam("b_task_id"))
    .order_by(task_recoveries.c.position)
)
SELECT_TASKS = select(tasks).order_by(tasks.c.created_at, tasks.c.id)
SELECT_ALL_RECOVERIES = select(task_recoveries).order_by(
    task_recoveries.c.task_id, task_recoveries.c.position
)


def _row_params(row: TaskRow) -> dict[str, Any]:
    p = row.progress
    return {
        "id": row.id,
        "verb": row.verb,
        "tag": row.tag,
        "priority": row.priority,
        "recovery": row.recovery,
        "persist": row.persist,
        "clean": row.clean,
        "locks": row.locks,
        "jobs": row.jobs,
        "created_at": row.created_at,
        "state": p.state,
        "jobs_done": p.jobs_done,
        "code": p.code,
        "message": p.message,
        "result": p.result,
        "updated_at": p.updated_at,
    }


def _progress_params(task_id: str, p: TaskProgress) -> dict[str, Any]:
    return {
        "b_id": task_id,
        "state": p.state,
        "jobs_done": p.jobs_done,
        "code": p.code,
        "message": p.message,
        "result": p.result,
        "updated_at": p.updated_at,
    }


def _to_row(r: Row[Any]) -> TaskRow:
    m = r._mapping
    return TaskRow(
        id=m["id"],
        verb=m["verb"],
        tag=m["tag"],
        priority=m["priority"],
        recovery=m["recovery"],
        persist=m["persist"],
        clean=m["clean"],
        locks=m["locks"],
        jobs=m["jobs"],
        created_at=m["created_at"],
        progress=TaskProgress(
            state=m["state"],
            jobs_done=m["jobs_done"],
            code=m["code"],
            message=m["message"],
            result=m["result"],
            updated_at=m["updated_at"],
        ),
    )


def _to_recovery(r: Row[Any]) -> RecoveryRow:
    m = r._mapping
    return RecoveryRow(task_id=m["task_id"], position=m["position"], name=m["name"], args=m["args"])


def _require(conn: Connection, task_id: str) -> None:
    if conn.execute(TASK_EXISTS, {"b_id": task_id}).first() is None:
        raise exceptions.TaskNotFound(f"no task {task_id}")


def apply_ops(conn: Connection, ops: Sequence[TaskOp]) -> None:
    """Execute ``ops`` on ``conn`` (inside the caller's transaction)."""
    for op in ops:
        if isinstance(op, InsertTask):
            conn.execute(INSERT_TASK, _row_params(op.row))
        elif isinstance(op, UpdateTask):
            if (
                conn.execute(UPDATE_PROGRESS, _progress_params(op.task_id, op.progress)).rowcount
                != 1
            ):
                raise exceptions.TaskNotFound(f"no task {op.task_id}")
        elif isinstance(op, PushRecovery):
            _require(conn, op.row.task_id)
            r = op.row
            conn.execute(
                INSERT_RECOVERY,
                {"task_id": r.task_id, "position": r.position, "name": r.name, "args": r.args},
            )
        elif isinstance(op, PopRecoveries):
            _require(conn, op.task_id)
            conn.execute(POP_RECOVERIES, {"b_task_id": op.task_id, "b_keep": op.keep})
        else:
            conn.execute(DELETE_RECOVERIES, {"b_task_id": op.task_id})
            conn.execute(DELETE_TASK, {"b_id": op.task_id})


def get_task(conn: Connection, task_id: str) -> StoredTask | None:
    """One task and its recoveries."""
    row = conn.execute(SELECT_TASK, {"b_id": task_id}).first()
    if row is None:
        return None
    recs = conn.execute(SELECT_RECOVERIES_OF, {"b_task_id": task_id}).all()
    return StoredTask(_to_row(row), tuple(_to_recovery(r) for r in recs))


def list_tasks(conn: Connection, state: str | None, tag: str | None) -> list[TaskRow]:
    """Task rows filtered by state and tag, oldest first."""
    query = SELECT_TASKS
    if state is not None:
        query = query.where(tasks.c.state == bindparam("b_state"))
    if tag is not None:
        query = query.where(tasks.c.tag == bindparam("b_tag"))
    params = {"b_state": state, "b_tag": tag}
    return [_to_row(r) for r in conn.execute(query, params)]


def load_all(conn: Connection) -> list[StoredTask]:
    """Every task with its recoveries, oldest first."""
    stacks: dict[str, list[RecoveryRow]] = {}
    for r in conn.execute(SELECT_ALL_RECOVERIES):
        rec = _to_recovery(r)
        stacks.setdefault(rec.task_id, []).append(rec)
    return [
        StoredTask(row, tuple(stacks.get(row.id, ())))
        for row in (_to_row(r) for r in conn.execute(SELECT_TASKS))
    ]


class SqlTaskRepository:
    """The tasks repository over SQLite or PostgreSQL."""

    def __init__(self, executor: SqlExecutor) -> None:
        self._executor = executor

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        """Apply ``ops`` in order in one transaction."""
        ops = tuple(ops)
        await self._executor.run(lambda conn: apply_ops(conn, ops))

    async def get(self, task_id: str) -> StoredTask | None:
        """The task with this id and its recoveries, or ``None``."""
        return await self._executor.run(lambda conn: get_task(conn, task_id))

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[TaskRow]:
        """Task rows, optionally filtered by state and tag, oldest first."""
        return await self._executor.run(lambda conn: list_tasks(conn, state, tag))

    async def load_all(self) -> builtins.list[StoredTask]:
        """Every task with its recoveries, oldest first."""
        return await self._executor.run(load_all)
