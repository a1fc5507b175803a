"""One task in memory: its data, its pending writes, and its snapshot.

The engine changes a :class:`TaskRuntime` only through :meth:`move` (checked against the state
table) and the recovery-stack methods; each records what must be written, and
:meth:`take_ops` turns that into one transaction's operations. Must not await anything.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any

from corral.store.tasks import (
    DeleteTask,
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
from corral.store.types import JSON
from corral.tasks.locking import HeldLike
from corral.tasks.model import (
    CleanPolicy,
    PersistPolicy,
    Priority,
    RecoveryPolicy,
    Step,
    TaskInfo,
)
from corral.tasks.states import DONE, StateMachine, TaskState

CODE_OK = "ok"
"""``TaskInfo.code`` while nothing failed."""


class TaskRuntime:
    """The engine's record of one task (not thread-safe; event loop only)."""

    def __init__(
        self,
        *,
        task_id: str,
        verb: str,
        tag: str,
        priority: Priority,
        recovery: RecoveryPolicy,
        persist: PersistPolicy,
        clean: CleanPolicy,
        locks: Mapping[str, str],
        jobs: list[Step],
        created_at: float,
        state: TaskState = TaskState.INIT,
        locks_text: str | None = None,
        jobs_text: str | None = None,
    ) -> None:
        self.id = task_id
        self.verb = verb
        self.tag = tag
        self.priority = priority
        self.recovery = recovery
        self.persist = persist
        self.clean = clean
        self.locks = dict(locks)
        self.jobs = jobs
        self.created_at = created_at
        self.updated_at = created_at
        self.machine = StateMachine(state)
        self.jobs_done = 0
        self.code = CODE_OK
        self.message = ""
        self.result: JSON = None
        self.result_text = "null"
        self.recoveries: list[Step] = []
        self._locks_text = locks_text
        self._jobs_text = jobs_text
        # persistence bookkeeping
        self.persisted = False
        self.dirty = True
        self.pending: list[TaskOp] = []
        self.events: list[tuple[TaskState, TaskState]] = []
        self.commit_lock = asyncio.Lock()
        # run-time bookkeeping
        self.stop_requested = False
        self.force = False
        self.in_persist = False
        self.interruptible: asyncio.Future[Any] | None = None
        self.driver: asyncio.Task[None] | None = None
        self.claim: str | None = None
        """The operation (rollback, clean, force stop) starting on the task, if any: it is set
        before that operation's first await, and every other such operation is refused while
        it is (the engine's one-operation-at-a-time rule)."""
        self.holds_locks = False
        self.held: HeldLike | None = None
        self.tokens: dict[str, int] = {}
        """The fencing token of each lock of the task's latest grant (kept after a release:
        a write carrying one is refused by whoever checks it once the grant is gone)."""
        self.has_slot = False
        self.waiters: list[asyncio.Future[TaskInfo]] = []
        self.broken: BaseException | None = None
        self.reason = ""
        """Why the task is being rolled back (kept while recoveries overwrite the message)."""

    # --- state ------------------------------------------------------------------------------

    @property
    def state(self) -> TaskState:
        """The current state."""
        return self.machine.state

    @property
    def done(self) -> bool:
        """Whether the task is in a done state."""
        return self.machine.state in DONE

    def move(self, dst: TaskState, now: float) -> None:
        """Change state along the table (raises and changes nothing otherwise)."""
        src = self.machine.move(dst)
        self.updated_at = now
        self.dirty = True
        self.events.append((src, dst))

    def set_result(self, code: str, message: str, result: JSON = None) -> None:
        """Record the task's outcome (``result`` must be JSON-serialisable)."""
        self.result_text = json.dumps(result, allow_nan=False, separators=(",", ":"))
        self.code, self.message, self.result = code, message, result
        self.dirty = True

    def set_message(self, message: str) -> None:
        """Change the message only (progress), written with the next commit."""
        self.message = message
        self.dirty = True

    # --- the recovery stack -------------------------------------------------------------------

    def push(self, step: Step, args_text: str) -> None:
        """Put ``step`` on top of the stack (written with the next commit)."""
        position = len(self.recoveries)
        self.recoveries.append(step)
        self.pending.append(PushRecovery(RecoveryRow(self.id, position, step.name, args_text)))

    def truncate(self, keep: int) -> None:
        """Drop every recovery at ``position >= keep`` (written with the next commit)."""
        del self.recoveries[keep:]
        self.pending.append(PopRecoveries(self.id, keep))

    # --- persistence ---------------------------------------------------------------------------

    def row(self) -> TaskRow:
        """The full row, for the first insert."""
        if self._locks_text is None:
            self._locks_text = json.dumps(self.locks, sort_keys=True)
        if self._jobs_text is None:
            self._jobs_text = json.dumps(
                [{"name": j.name, "args": dict(j.args)} for j in self.jobs],
                separators=(",", ":"),
            )
        return TaskRow(
            id=self.id,
            verb=self.verb,
            tag=self.tag,
            priority=self.priority.value,
            recovery=self.recovery.value,
            persist=self.persist.value,
            clean=self.clean.value,
            locks=self._locks_text,
            jobs=self._jobs_text,
            created_at=self.created_at,
            progress=self.progress(),
        )

    def progress(self) -> TaskProgress:
        """The mutable columns as they are now."""
        return TaskProgress(
            state=self.machine.state.value,
            jobs_done=self.jobs_done,
            code=self.code,
            message=self.message,
            result=self.result_text,
            updated_at=self.updated_at,
        )

    def take_ops(self, *, forget: bool = False) -> list[TaskOp]:
        """The writes since the last commit, as one transaction (and forget them here).

        With ``forget`` the task is deleted instead (clean ``auto`` at the end).
        """
        pending, self.pending = self.pending, []
        if forget:
            self.dirty = False
            return [DeleteTask(self.id)] if self.persisted else []
        ops: list[TaskOp] = []
        if not self.persisted:
            ops.append(InsertTask(self.row()))
        elif self.dirty:
            ops.append(UpdateTask(self.id, self.progress()))
        self.dirty = False
        ops.extend(pending)
        return ops

    # --- snapshots -------------------------------------------------------------------------------

    def info(self) -> TaskInfo:
        """An immutable snapshot for callers."""
        return TaskInfo(
            id=self.id,
            verb=self.verb,
            tag=self.tag,
            state=self.machine.state,
            code=self.code,
            message=self.message,
            result=self.result,
            priority=self.priority,
            recovery=self.recovery,
            persist=self.persist,
            clean=self.clean,
            jobs_done=self.jobs_done,
            jobs_total=len(self.jobs),
            jobs=tuple(j.name for j in self.jobs),
            recoveries=tuple(r.name for r in self.recoveries),
            locks=dict(self.locks),
            created_at=self.created_at,
            updated_at=self.updated_at,
        )

    @classmethod
    def load(cls, stored: StoredTask) -> TaskRuntime:
        """Rebuild a task from the store (engine start)."""
        row = stored.row
        jobs = [Step(j["name"], j.get("args") or {}) for j in json.loads(row.jobs)]
        task = cls(
            task_id=row.id,
            verb=row.verb,
            tag=row.tag,
            priority=Priority(row.priority),
            recovery=RecoveryPolicy(row.recovery),
            persist=PersistPolicy(row.persist),
            clean=CleanPolicy(row.clean),
            locks=json.loads(row.locks),
            jobs=jobs,
            created_at=row.created_at,
            state=TaskState(row.progress.state),
            locks_text=row.locks,
            jobs_text=row.jobs,
        )
        p = row.progress
        task.jobs_done = p.jobs_done
        task.code, task.message, task.result_text = p.code, p.message, p.result
        task.result = json.loads(p.result)
        task.reason = p.message if p.code != CODE_OK else ""
        task.updated_at = p.updated_at
        task.recoveries = [Step(r.name, json.loads(r.args)) for r in stored.recoveries]
        task.persisted = True
        task.dirty = False
        return task
