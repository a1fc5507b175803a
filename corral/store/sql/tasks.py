"""SQL tasks repository: every query of the tasks concept, named, with bound parameters only.

The statements are built with Core once at import and compiled once per dialect
(:class:`~corral.store.sql.prepared.Prepared`), so a commit costs the driver round trips and
little else. Must not be called from the event loop thread
directly: everything goes through :class:`~corral.store.sql.executor.SqlExecutor`.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, insert, select, update

from corral import exceptions
from corral.store.sql.executor import SqlExecutor
from corral.store.sql.prepared import Prepared
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

log = logging.getLogger(__name__)

# --- the named queries (compiled once per dialect, see prepared.py) -----------------------

INSERT_TASK = Prepared(
    "insert_task", insert(tasks).values({c.name: bindparam(c.name) for c in tasks.c})
)
UPDATE_PROGRESS = Prepared(
    "update_progress",
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"))
    .values(
        state=bindparam("state"),
        jobs_done=bindparam("jobs_done"),
        code=bindparam("code"),
        message=bindparam("message"),
        result=bindparam("result"),
        updated_at=bindparam("updated_at"),
    ),
)
UPDATE_PROGRESS_FENCED = Prepared(
    "update_progress_fenced",
    update(tasks)
    .where(tasks.c.id == bindparam("b_id"), tasks.c.host == bindparam("b_host"))
    .values(
        state=bindparam("state"),
        jobs_done=bindparam("jobs_done"),
        code=bindparam("code"),
        message=bindparam("message"),
        result=bindparam("result"),
        updated_at=bindparam("updated_at"),
    ),
)
INSERT_RECOVERY = Prepared(
    "insert_recovery",
    insert(task_recoveries).values({c.name: bindparam(c.name) for c in task_recoveries.c}),
)
POP_RECOVERIES = Prepared(
    "pop_recoveries",
    delete(task_recoveries).where(
        task_recoveries.c.task_id == bindparam("b_task_id"),
        task_recoveries.c.position >= bindparam("b_keep"),
    ),
)
TASK_EXISTS = Prepared("task_exists", select(tasks.c.id).where(tasks.c.id == bindparam("b_id")))
TASK_HOST = Prepared(
    "task_host",
    # row-locked: a claim by another host cannot commit between this check and the write
    select(tasks.c.host).where(tasks.c.id == bindparam("b_id")).with_for_update(),
)
DELETE_RECOVERIES = Prepared(
    "delete_recoveries",
    delete(task_recoveries).where(task_recoveries.c.task_id == bindparam("b_task_id")),
)
DELETE_TASK = Prepared("delete_task", delete(tasks).where(tasks.c.id == bindparam("b_id")))
SELECT_TASK = Prepared("select_task", select(tasks).where(tasks.c.id == bindparam("b_id")))
SELECT_RECOVERIES_OF = Prepared(
    "select_recoveries_of",
    select(task_recoveries)
    .where(task_recoveries.c.task_id == bindparam("b_task_id"))
    .order_by(task_recoveries.c.position),
)
_ORDER = (tasks.c.created_at, tasks.c.id)
SELECT_TASKS = Prepared("select_tasks", select(tasks).order_by(*_ORDER))
SELECT_TASKS_BY_STATE = Prepared(
    "select_tasks_by_state",
    select(tasks).where(tasks.c.state == bindparam("b_state")).order_by(*_ORDER),
)
SELECT_TASKS_BY_TAG = Prepared(
    "select_tasks_by_tag",
    select(tasks).where(tasks.c.tag == bindparam("b_tag")).order_by(*_ORDER),
)
SELECT_TASKS_BY_STATE_AND_TAG = Prepared(
    "select_tasks_by_state_and_tag",
    select(tasks)
    .where(tasks.c.state == bindparam("b_state"), tasks.c.tag == bindparam("b_tag"))
    .order_by(*_ORDER),
)
SELECT_ALL_RECOVERIES = Prepared(
    "select_all_recoveries",
    select(task_recoveries).order_by(task_recoveries.c.task_id, task_recoveries.c.position),
)


def _row_params(row: TaskRow, host: str = "") -> dict[str, Any]:
    p = row.progress
    return {
        "host": host,
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


def _require(conn: Connection, task_id: str, known: set[str], host: str = "") -> None:
    """The task exists and, on a cluster (``host`` set), is still recorded as ``host``'s."""
    if task_id not in known:
        if not host:
            if not TASK_EXISTS.exists(conn, {"b_id": task_id}):
                raise exceptions.TaskNotFound(f"no task {task_id}")
        else:
            row = TASK_HOST.execute(conn, {"b_id": task_id}).first()
            if row is None:
                raise exceptions.TaskNotFound(f"no task {task_id}")
            _fence(task_id, str(row[0]), host)
        known.add(task_id)


def _fence(task_id: str, owner: str, host: str) -> None:
    # The fencing of task writes across hosts: a row another incarnation claimed (this one
    # was paused or cut off past its lease) is no longer this host's to write.
    if owner != host:
        log.error(
            "cluster: refused a write of task %s: it is %s's now, not %s's", task_id, owner, host
        )
        raise exceptions.TaskTakenOver(
            f"task {task_id} is run by {owner or 'no host'} now, not by {host}: write refused"
        )


def apply_ops(conn: Connection, ops: Sequence[TaskOp], host: str = "") -> None:
    """Execute ``ops`` on ``conn`` (inside the caller's transaction); new tasks are ``host``'s.

    With ``host`` set (a cluster member), every write to an existing task is fenced: it must
    still be recorded as ``host``'s, else :class:`~corral.exceptions.TaskTakenOver` (logged) and
    the transaction writes nothing.
    """
    known: set[str] = set()  # ids this transaction has seen exist (skips a SELECT per push)
    for op in ops:
        if isinstance(op, InsertTask):
            INSERT_TASK.write(conn, _row_params(op.row, host))
            known.add(op.row.id)
        elif isinstance(op, UpdateTask):
            params = _progress_params(op.task_id, op.progress)
            if not host:
                written = UPDATE_PROGRESS.write(conn, params)
            else:  # fenced in the same statement: no extra round trip
                written = UPDATE_PROGRESS_FENCED.write(conn, {**params, "b_host": host})
            if written != 1:
                _require(conn, op.task_id, set(), host)  # NotFound or TaskTakenOver
                raise exceptions.TaskNotFound(f"no task {op.task_id}")
            known.add(op.task_id)
        elif isinstance(op, PushRecovery):
            r = op.row
            _require(conn, r.task_id, known, host)
            INSERT_RECOVERY.write(
                conn, {"task_id": r.task_id, "position": r.position, "name": r.name, "args": r.args}
            )
        elif isinstance(op, PopRecoveries):
            _require(conn, op.task_id, known, host)
            POP_RECOVERIES.write(conn, {"b_task_id": op.task_id, "b_keep": op.keep})
        else:
            if host and op.task_id not in known:
                row = TASK_HOST.execute(conn, {"b_id": op.task_id}).first()
                if row is not None:
                    _fence(op.task_id, str(row[0]), host)
            DELETE_RECOVERIES.write(conn, {"b_task_id": op.task_id})
            DELETE_TASK.write(conn, {"b_id": op.task_id})
            known.discard(op.task_id)


def get_task(conn: Connection, task_id: str) -> StoredTask | None:
    """One task and its recoveries."""
    row = SELECT_TASK.execute(conn, {"b_id": task_id}).first()
    if row is None:
        return None
    recs = SELECT_RECOVERIES_OF.execute(conn, {"b_task_id": task_id}).all()
    return StoredTask(_to_row(row), tuple(_to_recovery(r) for r in recs))


def list_tasks(conn: Connection, state: str | None, tag: str | None) -> list[TaskRow]:
    """Task rows filtered by state and tag, oldest first."""
    if state is None and tag is None:
        result = SELECT_TASKS.execute(conn, {})
    elif tag is None:
        result = SELECT_TASKS_BY_STATE.execute(conn, {"b_state": state})
    elif state is None:
        result = SELECT_TASKS_BY_TAG.execute(conn, {"b_tag": tag})
    else:
        result = SELECT_TASKS_BY_STATE_AND_TAG.execute(conn, {"b_state": state, "b_tag": tag})
    return [_to_row(r) for r in result]


def load_all(conn: Connection) -> list[StoredTask]:
    """Every task with its recoveries, oldest first."""
    stacks: dict[str, list[RecoveryRow]] = {}
    for r in SELECT_ALL_RECOVERIES.execute(conn, {}):
        rec = _to_recovery(r)
        stacks.setdefault(rec.task_id, []).append(rec)
    return [
        StoredTask(row, tuple(stacks.get(row.id, ())))
        for row in (_to_row(r) for r in SELECT_TASKS.execute(conn, {}))
    ]


class SqlTaskRepository:
    """The tasks repository over SQLite or PostgreSQL."""

    def __init__(self, executor: SqlExecutor) -> None:
        self._executor = executor
        self.host = ""
        """The host incarnation (``host_id#incarnation``) new tasks are recorded as run by: set
        by a cluster member (:mod:`corral.controller.takeover`); '' on a single-host store."""

    async def apply(self, ops: Sequence[TaskOp]) -> None:
        """Apply ``ops`` in order in one transaction."""
        ops = tuple(ops)
        host = self.host
        await self._executor.run(lambda conn: apply_ops(conn, ops, host))

    async def get(self, task_id: str) -> StoredTask | None:
        """The task with this id and its recoveries, or ``None``."""
        return await self._executor.run(lambda conn: get_task(conn, task_id))

    async def list(self, *, state: str | None = None, tag: str | None = None) -> list[TaskRow]:
        """Task rows, optionally filtered by state and tag, oldest first."""
        return await self._executor.run(lambda conn: list_tasks(conn, state, tag))

    async def load_all(self) -> builtins.list[StoredTask]:
        """Every task with its recoveries, oldest first."""
        return await self._executor.run(load_all)
