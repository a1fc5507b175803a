"""The durable task engine (SPEC §4): submit, wait, list, show, stop, roll back, clean, recover.

:class:`TaskEngine` holds the public operations and recover-on-start; the machinery that walks
each task through its states, committing write-ahead, is :class:`corral.tasks.driver.Driver`.
Must not do blocking I/O: the store runs its SQL in worker threads.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import enum
import json
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypeVar

from corral import exceptions
from corral.ids import IdGenerator
from corral.store import Store
from corral.store.tasks import StoredTask
from corral.tasks import locking
from corral.tasks.driver import Driver, Subscriber
from corral.tasks.model import (
    CleanPolicy,
    PersistPolicy,
    Priority,
    RecoveryPolicy,
    Step,
    TaskInfo,
)
from corral.tasks.runtime import CODE_OK, TaskRuntime
from corral.tasks.states import ABORTABLE, DONE, RECOVERY_ABORTABLE, TaskState
from corral.tasks.steps import StepRegistry, check_name, dump_args

S = TaskState
E = TypeVar("E", bound=enum.StrEnum)


def _choice(cls: type[E], value: object, what: str) -> E:
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(m.value for m in cls)
    raise exceptions.InvalidInput(f"{what} must be one of {allowed}: {value!r}")


def _text(value: object, what: str, *, empty: bool) -> str:
    if not isinstance(value, str) or len(value) > 255 or (not empty and not value):
        raise exceptions.InvalidInput(f"{what} must be a string of {int(not empty)}-255 characters")
    return value


def _consume(future: asyncio.Future[TaskInfo]) -> None:
    """Mark the future's outcome as seen, for when its awaiting caller was cancelled."""
    if not future.cancelled():
        future.exception()


def _defers_insert(task: TaskRuntime) -> bool:
    """Whether ``submit`` may return before the task's first commit (recovery and clean ``auto``).

    Such a task is inserted by its first commit instead: the first job's recovery push (one
    transaction for the submission, the moves to ``running`` and the push), a lock wait, or its
    end. Until then nothing outside the engine has happened on its behalf that a rollback would
    undo, and a crash before that commit ends where recovering the task would have: recovery
    ``auto`` rolls back an empty stack and clean ``auto`` deletes the record.
    """
    return task.recovery is RecoveryPolicy.AUTO and task.clean is CleanPolicy.AUTO


class TaskEngine(Driver):
    """Runs tasks made of registered steps, durably when persist is ``auto``.

    ``deps`` is handed to every step as ``ctx.deps``. At most ``max_running`` tasks run jobs at
    once; the others wait in ``queued``, high priority first. Done tasks with clean ``auto`` are
    forgotten, but the last ``keep_done`` of them stay answerable by :meth:`wait` and
    :meth:`show`.
    """

    def __init__(
        self,
        store: Store | None,
        locks: locking.LockManagerLike,
        registry: StepRegistry,
        *,
        deps: object = None,
        max_running: int = 8,
        clock: Callable[[], float] = time.time,
        keep_done: int = 10_000,
    ) -> None:
        if not isinstance(max_running, int) or max_running < 1:
            raise exceptions.InvalidInput("max_running must be a positive integer")
        super().__init__(
            store.tasks if store is not None else None,
            locks,
            registry,
            deps=deps,
            max_running=max_running,
            clock=clock,
            keep_done=keep_done,
        )
        self._started = False
        self._closed = False
        self._ids = IdGenerator()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover every task the store holds (SPEC §4), then accept work."""
        if self._started:
            raise exceptions.TaskError("the engine is already started")
        self._started = True
        if self._repo is None:
            return
        await self.recover_tasks(await self._repo.load_all())

    async def recover_tasks(self, stored_tasks: Sequence[StoredTask]) -> None:
        """Recover these stored tasks as at a start (SPEC §4): tasks another host ran and this
        one took over (``corral.controller.takeover``). Tasks already known are left alone,
        unless their driver stopped on a store error (a write refused while another host held
        the task): those are recovered from the store's record."""
        for stored in stored_tasks:
            known = self._tasks.get(stored.row.id)
            if known is not None and known.broken is None:
                continue
            try:
                task = TaskRuntime.load(stored)
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                raise exceptions.StoreError(
                    f"task {stored.row.id} in the store cannot be read: {exc!r}"
                ) from exc
            self._tasks[task.id] = task
            self._restart(task)

    def _restart(self, task: TaskRuntime) -> None:
        now = self._clock()
        if task.state is S.INIT:
            task.move(S.PREPARING, now)
        state = task.state
        if state in DONE:
            if task.clean is CleanPolicy.AUTO:
                task.driver = self._spawn(self._settle(task))
            return
        if state is S.WAITRECOVER:
            return  # waits for an operator's rollback
        if state in ABORTABLE:
            if task.recovery is RecoveryPolicy.RESUME:
                if state is S.RUNNING:
                    task.move(S.QUEUED, now)  # re-run the interrupted job
                task.set_message("resumed after a restart")
            else:
                task.reason = "interrupted by a restart"
                task.set_result("task_aborted", task.reason)
                task.move(S.ABORTING, now)
        elif state is S.RACQUIRING:
            task.move(S.RACQUIRING, now)
        # recovering restarts its rollback from the persisted stack; aborting and raborting
        # are driven to their end by the driver
        task.driver = self._spawn(self._drive(task))

    async def close(self) -> None:
        """Stop driving tasks; what was committed stays for the next :meth:`start`."""
        self._closed = True
        pending = [t.driver for t in self._tasks.values() if t.driver is not None]
        pending.extend(self._background)
        for job in pending:
            job.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in self._tasks.values():  # this process's locks die with the engine
            self._release_locks(task)
            for waiter in task.waiters:
                if not waiter.done():
                    waiter.set_exception(exceptions.TaskError("the engine was closed"))

    # --- operations -------------------------------------------------------------------------

    async def submit(
        self,
        verb: str,
        *,
        jobs: Iterable[Step] = (),
        locks: Mapping[str, str] | None = None,
        tag: str = "",
        priority: str = "medium",
        recovery: str = "auto",
        persist: str = "auto",
        clean: str = "auto",
    ) -> str:
        """Create a task and start it; return its id.

        With persist ``auto`` the task is durable when this returns, except with recovery and
        clean both ``auto``: such a task is written by its first commit, together with its first
        job's recovery push and before that job can act; a crash before that commit loses a task
        that had nothing to undo, as its recovery would have ended anyway.
        """
        if self._closed or not self._started:
            raise exceptions.TaskError("the engine is not running: call start() first, once")
        steps = list(jobs)
        texts = []
        for step in steps:
            if not isinstance(step, Step):
                raise exceptions.InvalidInput(f"jobs must be Step values, not {step!r}")
            self._registry.get_job(check_name(step.name, "job"))
            texts.append(
                f'{{"name":{json.dumps(step.name)},"args":{dump_args(step.name, step.args)}}}'
            )
        persist_policy = _choice(PersistPolicy, persist, "persist")
        if persist_policy is PersistPolicy.AUTO and self._repo is None:
            raise exceptions.InvalidInput("persist auto needs an engine with a store")
        task = TaskRuntime(
            task_id=self._ids.text(),
            verb=_text(verb, "verb", empty=False),
            tag=_text(tag, "tag", empty=True),
            priority=_choice(Priority, priority, "priority"),
            recovery=_choice(RecoveryPolicy, recovery, "recovery"),
            persist=persist_policy,
            clean=_choice(CleanPolicy, clean, "clean"),
            locks=locking.check_locks(locks or {}),
            jobs=steps,
            created_at=self._clock(),
            jobs_text=f"[{','.join(texts)}]",
        )
        task.move(S.PREPARING, task.created_at)
        if not steps:
            task.set_result(CODE_OK, "no jobs")
            task.move(S.FINISHED, task.created_at)
            self._tasks[task.id] = task
            await self._settle(task)
            return task.id
        if not _defers_insert(task):
            await self._commit(task)
        self._tasks[task.id] = task
        if self._closed:  # closed during the commit; a persisted task is recovered next start
            raise exceptions.TaskError(f"the engine was closed while task {task.id} was submitted")
        task.driver = self._spawn(self._drive(task))
        return task.id

    def show(self, task_id: str) -> TaskInfo:
        """The task's status and details."""
        task = self._tasks.get(task_id)
        if task is not None:
            return task.info()
        info = self._recent.get(task_id)
        if info is None:
            raise exceptions.TaskNotFound(f"no task {task_id}")
        return info

    def list(self, *, state: str | None = None, tag: str | None = None) -> builtins.list[TaskInfo]:
        """Tasks the engine holds, oldest first, optionally by state and tag."""
        wanted = None if state is None else _choice(TaskState, state, "state")
        return [
            t.info()
            for t in sorted(self._tasks.values(), key=lambda t: (t.created_at, t.id))
            if (wanted is None or t.state is wanted) and (tag is None or t.tag == tag)
        ]

    async def wait(self, task_id: str, timeout: float | None = None) -> TaskInfo:
        """Wait until the task is done or waits in ``waitrecover``; its snapshot then."""
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0
        ):
            raise exceptions.InvalidInput(f"timeout must be None or seconds >= 0: {timeout!r}")
        task = self._tasks.get(task_id)
        if task is None:
            return self.show(task_id)
        if task.broken is not None:
            raise exceptions.StoreError(f"task {task_id} stopped: {task.broken}")
        if self._settled(task):
            return task.info()
        future: asyncio.Future[TaskInfo] = asyncio.get_running_loop().create_future()
        task.waiters.append(future)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise exceptions.TaskWaitTimeout(
                f"task {task_id} is still {task.state.value} after {timeout} s"
            ) from None
        finally:
            if future in task.waiters:
                task.waiters.remove(future)

    @staticmethod
    def _settled(task: TaskRuntime) -> bool:
        return (task.done or task.state is S.WAITRECOVER) and (
            task.driver is None or task.driver.done()
        )

    async def stop(self, task_id: str, *, force: bool = False) -> TaskInfo:
        """Abort the task; a task in recovery is only aborted with ``force``.

        A force stop is refused with :class:`~corral.exceptions.TaskBusy` while a rollback or
        another force stop of the task is starting.
        """
        task = self._get(task_id)
        state = task.state
        if state in ABORTABLE:
            task.stop_requested = True
            self._interrupt(task)
        elif state in RECOVERY_ABORTABLE and force:
            with self._claimed(task, "force stop"):
                if state is S.WAITRECOVER:
                    await self._idle(task)
                    self._check_kept(task)
                    self._check_open()
                    task.stop_requested = task.force = True
                    task.move(S.RABORTING, self._clock())
                    task.driver = self._spawn(self._drive(task))
                else:
                    task.stop_requested = task.force = True
                    self._interrupt(task)
        return task.info()

    async def rollback(self, task_id: str) -> TaskInfo:
        """Roll back a finished task or one waiting in ``waitrecover`` (re-acquires locks).

        Returns the task as committed in ``racquiring``. Any other state is refused with
        :class:`~corral.exceptions.TaskStateTransitionError` — a rollback already under way
        included — and so is a task another rollback, clean or force stop is starting on
        (:class:`~corral.exceptions.TaskBusy`, a subclass); a refused call changes nothing.
        """
        task = self._get(task_id)
        with self._claimed(task, "rollback"):
            if task.state not in (S.FINISHED, S.WAITRECOVER):
                raise exceptions.TaskStateTransitionError(
                    f"a task cannot move from {task.state.value} to racquiring by a rollback: "
                    f"task {task_id} must be finished or in waitrecover"
                )
            await self._idle(task)  # the claim keeps its state; the driver only settles
            self._check_kept(task)
            self._check_open()
            task.stop_requested = task.force = False
            task.reason = "rollback requested" if task.state is S.FINISHED else task.reason
            task.move(S.RACQUIRING, self._clock())
            task.set_message("rolling back")
            # The new driver is installed before any await and commits racquiring itself, so
            # a caller cancelled while that commit runs cannot leave the task undriven.
            started: asyncio.Future[TaskInfo] = asyncio.get_running_loop().create_future()
            started.add_done_callback(_consume)
            task.driver = self._spawn(self._drive(task, started))
        return await asyncio.shield(started)

    async def clean(self, task_id: str) -> None:
        """Forget a done task (and delete its record).

        Refused with :class:`~corral.exceptions.TaskBusy` while a rollback of the task is
        starting, and with :class:`~corral.exceptions.TaskNotDone` once it has.
        """
        task = self._tasks.get(task_id)
        if task is None:
            if self._recent.pop(task_id, None) is None:
                raise exceptions.TaskNotFound(f"no task {task_id}")
            return
        with self._claimed(task, "clean"):
            if not task.done:
                raise exceptions.TaskNotDone(f"task {task_id} is {task.state.value}, not done")
            await self._idle(task)
            if self._tasks.get(task_id) is task:  # else its own settling forgot it (clean auto)
                await self._commit(task, forget=True)
                self._tasks.pop(task_id, None)
            self._recent.pop(task_id, None)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` after every committed state change; returns unsubscribe."""
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def _get(self, task_id: str) -> TaskRuntime:
        task = self._tasks.get(task_id)
        if task is None:
            raise exceptions.TaskNotFound(f"no task {task_id} (or it was cleaned)")
        return task

    @staticmethod
    @contextlib.contextmanager
    def _claimed(task: TaskRuntime, operation: str) -> Iterator[None]:
        """Hold ``task`` for ``operation``, or refuse it if another operation holds the task.

        Entered before the operation's first await: the one-operation-at-a-time rule that keeps
        two rollbacks (or a rollback and a clean) from both passing their checks.
        """
        if task.claim is not None:
            raise exceptions.TaskBusy(
                f"task {task.id}: {operation} refused, a {task.claim} of it is in progress; "
                "retry in a moment"
            )
        task.claim = operation
        try:
            yield
        finally:
            task.claim = None

    def _check_kept(self, task: TaskRuntime) -> None:
        """Refuse a task that was forgotten (clean ``auto``) or broke while we waited for it."""
        if self._tasks.get(task.id) is not task:
            raise exceptions.TaskNotFound(f"no task {task.id} (it was cleaned when it ended)")
        if task.broken is not None:
            raise exceptions.StoreError(f"task {task.id} stopped: {task.broken}")

    def _check_open(self) -> None:
        if self._closed:
            raise exceptions.TaskError("the engine was closed")

    async def _idle(self, task: TaskRuntime) -> None:
        """Let a driver that is only settling the task finish first."""
        if task.driver is not None and not task.driver.done():
            await asyncio.shield(task.driver)

    def _interrupt(self, task: TaskRuntime) -> None:
        if task.interruptible is not None and not task.in_persist:
            task.interruptible.cancel()
