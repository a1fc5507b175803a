"""Walks one task through its states (SPEC §4): the engine's machinery behind the operations.

:class:`Driver` owns what every running task shares — the store, the lock manager, the run queue
and its slots, the subscribers — and drives each task with one asyncio task
(:meth:`Driver._drive`). Write-ahead: with persist ``auto``, a change is committed before anything
outside the engine can depend on it: before a job acts (its recovery push commits every change
made so far in the same transaction), before locks are released, before waiters and subscribers
are told. Consecutive changes with no outside effect between them share one transaction (see
``docs/tasks.md`` for why that is still write-ahead). The public operations are in
:mod:`corral.tasks.engine`; this module must not do blocking I/O.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import logging
from collections.abc import Callable, Coroutine
from typing import TypeVar

from corral import exceptions
from corral.store.tasks import TaskRepository
from corral.store.types import JSON
from corral.tasks import locking
from corral.tasks.model import CleanPolicy, PersistPolicy, RecoveryPolicy, Step, TaskEvent, TaskInfo
from corral.tasks.queue import RunQueue
from corral.tasks.runtime import CODE_OK, TaskRuntime
from corral.tasks.states import TaskState
from corral.tasks.steps import SENTINEL, JobContext, StepRegistry

log = logging.getLogger("corral.tasks.engine")
S = TaskState
T = TypeVar("T")
Subscriber = Callable[[TaskEvent], None]
"""A state-change callback (see ``TaskEngine.subscribe``)."""


def _error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, exceptions.CorralError) else "error"


class _Control:
    """The engine side of one job's :class:`JobContext`."""

    def __init__(self, engine: Driver, task: TaskRuntime, index: int | None) -> None:
        self._engine, self._task, self._index = engine, task, index
        self.active = True

    def _check_active(self) -> None:
        if not self.active:
            raise exceptions.TaskError(
                f"task {self._task.id}: the job has ended; it can no longer push recoveries"
            )

    async def push(self, step: Step, args_text: str) -> None:
        self._check_active()
        self._task.push(step, args_text)
        await self._commit()

    async def replace(self, step: Step | None, args_text: str) -> None:
        self._check_active()
        stack = self._task.recoveries
        keep = next((i for i in range(len(stack) - 1, -1, -1) if stack[i].name == SENTINEL), 0)
        self._task.truncate(keep)
        if step is not None:
            self._task.push(step, args_text)
        await self._commit()

    def progress(self, text: str) -> None:
        if self._index is None:
            self._task.set_message(f"rolling back: {text}")
        else:
            n = len(self._task.jobs)
            self._task.set_message(f"running job {self._index + 1} of {n}: {text}")

    async def _commit(self) -> None:
        task = self._task
        task.in_persist = True  # a stop must not cancel the job half-way through a commit
        try:
            await self._engine._commit(task)
        finally:
            task.in_persist = False
        if task.stop_requested:
            raise exceptions.TaskAborted("the task was stopped")


class Driver:
    """Shared state of the engine and the per-task driver; use :class:`TaskEngine`."""

    def __init__(
        self,
        repo: TaskRepository | None,
        locks: locking.LockManagerLike,
        registry: StepRegistry,
        *,
        deps: object,
        max_running: int,
        clock: Callable[[], float],
        keep_done: int,
    ) -> None:
        self._repo = repo
        self._locks = locks
        self._registry = registry
        self.deps = deps
        self._max_running = max_running
        self._clock = clock
        self._tasks: dict[str, TaskRuntime] = {}
        self._recent: collections.OrderedDict[str, TaskInfo] = collections.OrderedDict()
        self._keep_done = keep_done
        self._queue = RunQueue()
        self._slot_waiters: dict[str, asyncio.Future[None]] = {}
        self._running = 0
        self._subscribers: list[Subscriber] = []
        self._background: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Coroutine[object, object, None]) -> asyncio.Task[None]:
        job = asyncio.get_running_loop().create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)
        return job

    # --- persistence and events -----------------------------------------------------------------

    async def _commit(self, task: TaskRuntime, *, forget: bool = False) -> None:
        """Write everything changed since the last commit in one transaction, then tell."""
        async with task.commit_lock:
            if task.persist is PersistPolicy.AUTO and self._repo is not None:
                ops = task.take_ops(forget=forget)
                if ops:
                    await self._repo.apply(ops)
                task.persisted = not forget
            else:
                task.pending.clear()
                task.dirty = False
            events, task.events = task.events, []
        if events and self._subscribers:
            info = task.info()
            for previous, state in events:
                event = TaskEvent(task.id, previous, state, info)
                for callback in builtins.list(self._subscribers):
                    try:
                        callback(event)
                    except Exception:
                        log.exception("task event subscriber %r failed", callback)

    def _commit_soon(self, task: TaskRuntime) -> None:
        async def commit() -> None:
            try:
                await self._commit(task)
            except exceptions.CorralError:
                log.exception("task %s: background commit failed", task.id)

        self._spawn(commit())

    # --- the driver ----------------------------------------------------------------------------

    async def _drive(
        self, task: TaskRuntime, started: asyncio.Future[TaskInfo] | None = None
    ) -> None:
        """Walk ``task`` until it settles (with ``started``: commit, resolve it, then walk).

        ``started`` is resolved with the task as committed. It lets an operation (rollback)
        install the driver before its first await, so that a caller cancelled during the
        commit cannot leave a moved but undriven task behind.
        """
        try:
            if started is not None:
                await self._commit(task)
                started.set_result(task.info())
            while not await self._step(task):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Only the store or an engine bug gets here; the persisted state is what counts
            # and the next start recovers from it. Locks stay held: the world is unknown.
            log.exception("task %s: engine failure in %s", task.id, task.state.value)
            task.broken = exc
            if started is not None and not started.done():
                started.set_exception(exc)
            for waiter in task.waiters:
                if not waiter.done():
                    waiter.set_exception(exceptions.StoreError(f"task {task.id} stopped: {exc}"))
        finally:
            if started is not None and not started.done():
                started.set_exception(exceptions.TaskError("the engine was closed"))
            self._release_slot(task)

    async def _step(self, task: TaskRuntime) -> bool:
        """Advance one stage; ``True`` once the task is settled."""
        state = task.state
        if state in (S.PREPARING, S.BLOCKED, S.ACQUIRING) or (
            state is S.QUEUED and not task.holds_locks
        ):
            await self._acquire(task)
        elif state is S.QUEUED:
            await self._wait_slot(task)
        elif state is S.RUNNING:
            await self._run_jobs(task)
        elif state is S.ABORTING:
            self._after_abort(task)
        elif state is S.RACQUIRING:
            await self._racquire(task)
        elif state is S.RECOVERING:
            await self._recover(task)
        elif state is S.RABORTING:
            task.move(S.FAILED, self._clock())
        else:
            await self._settle(task)
            return True
        return False

    async def _interruptible(self, task: TaskRuntime, future: asyncio.Future[T]) -> bool:
        """Await ``future``; ``False`` if :meth:`stop` cancelled it."""
        task.interruptible = future
        try:
            await future
            return True
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if (current is not None and current.cancelling()) or not task.stop_requested:
                raise
            return False
        finally:
            task.interruptible = None

    def _abort(self, task: TaskRuntime, code: str, message: str) -> None:
        self._release_slot(task)
        task.stop_requested = False
        task.reason = message
        task.set_result(code, message)
        task.move(S.ABORTING, self._clock())

    async def _acquire(self, task: TaskRuntime) -> None:
        if task.stop_requested:
            self._abort(task, "task_aborted", "stopped before it ran")
            return

        def on_wait() -> None:
            if task.state is S.PREPARING:
                task.move(S.BLOCKED, self._clock())
                task.set_message("blocked on locks")
                self._commit_soon(task)

        try:
            if task.locks:
                # Persisted tasks: the grant is made durable by the task's next commit (its
                # recovery push), which precedes any act of its jobs (docs/tasks.md).
                covered = task.persist is PersistPolicy.AUTO and self._repo is not None
                acquiring = asyncio.ensure_future(
                    locking.acquire(
                        self._locks, task.locks, owner=task.id, on_wait=on_wait, covered=covered
                    )
                )
                if not await self._interruptible(task, acquiring):
                    self._abort(task, "task_aborted", "stopped while waiting for locks")
                    return
                task.held = acquiring.result()
                task.tokens = locking.tokens_of(task.held, task.locks)
        except exceptions.CorralError as exc:
            self._abort(task, exc.code, f"locks not granted: {exc.message}")
            return
        task.holds_locks = True
        now = self._clock()
        if task.state is S.BLOCKED:
            task.move(S.PREPARING, now)
        if task.state is S.PREPARING:
            task.move(S.ACQUIRING, now)
        if task.state is S.ACQUIRING:
            task.move(S.QUEUED, now)

    async def _wait_slot(self, task: TaskRuntime) -> None:
        if task.stop_requested:
            self._abort(task, "task_aborted", "stopped while queued")
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._slot_waiters[task.id] = future
        self._queue.push(task.id, task.priority)
        self._dispatch()
        if not await self._interruptible(task, future):
            self._queue.remove(task.id)
            self._slot_waiters.pop(task.id, None)
            self._abort(task, "task_aborted", "stopped while queued")
            return
        task.move(S.RUNNING, self._clock())

    @staticmethod
    def _release_locks(task: TaskRuntime) -> None:
        task.holds_locks = False
        held, task.held = task.held, None
        if held is not None:
            held.release()

    def _dispatch(self) -> None:
        while self._running < self._max_running:
            task_id = self._queue.pop()
            if task_id is None:
                return
            future = self._slot_waiters.pop(task_id, None)
            if future is None or future.done():
                continue
            self._running += 1
            self._tasks[task_id].has_slot = True
            future.set_result(None)

    def _release_slot(self, task: TaskRuntime) -> None:
        if task.has_slot:
            task.has_slot = False
            self._running -= 1
            self._dispatch()

    async def _run_jobs(self, task: TaskRuntime) -> None:
        total = len(task.jobs)
        result: JSON = task.result
        while task.jobs_done < total:
            index = task.jobs_done
            if task.stop_requested:
                self._abort(task, "task_aborted", f"stopped before job {index + 1} of {total}")
                return
            step = task.jobs[index]
            task.set_message(f"running job {index + 1} of {total}")
            control = _Control(self, task, index)
            ctx = self._context(task, control, index)
            try:
                fn = self._registry.get_job(step.name)
                job = asyncio.ensure_future(fn(ctx, **step.args))
                try:
                    if not await self._interruptible(task, job):
                        self._abort(task, "task_aborted", f"stopped in job {index + 1} of {total}")
                        return
                finally:
                    control.active = False
                result = job.result()
            except Exception as exc:
                where = f"job {index + 1} of {total} ({step.name})"
                if isinstance(exc, exceptions.TaskAborted) and task.stop_requested:
                    self._abort(task, exc.code, f"stopped in {where}")
                else:
                    self._abort(task, _error_code(exc), f"{where} failed: {exc}")
                return
            task.jobs_done = index + 1
        try:
            task.set_result(CODE_OK, f"{total} jobs completed successfully", result)
        except (TypeError, ValueError) as exc:
            self._abort(task, "invalid_input", f"the last job's result is not JSON: {exc}")
            return
        self._release_slot(task)
        task.move(S.FINISHED, self._clock())

    def _context(self, task: TaskRuntime, control: _Control, index: int | None) -> JobContext:
        return JobContext(
            task_id=task.id,
            verb=task.verb,
            tag=task.tag,
            deps=self.deps,
            registry=self._registry,
            control=control,
            job_index=index,
            jobs_total=len(task.jobs),
            tokens=task.tokens,
        )

    def _after_abort(self, task: TaskRuntime) -> None:
        now = self._clock()
        if task.recovery is RecoveryPolicy.NONE:
            task.move(S.FAILED, now)
        elif task.recovery is RecoveryPolicy.MANUAL:
            task.move(S.WAITRECOVER, now)
        else:  # auto, and resume (which only differs after a restart)
            task.move(S.RACQUIRING, now)

    async def _reacquire(self, task: TaskRuntime) -> bool:
        """Take the task's locks again for its rollback; ``False`` if force-stopped meanwhile."""
        if task.holds_locks or not task.locks:
            task.holds_locks = True
            return True
        acquiring = asyncio.ensure_future(
            locking.acquire(self._locks, task.locks, owner=task.id, on_wait=None)
        )
        try:
            if not await self._interruptible(task, acquiring):
                return False
        except exceptions.CorralError as exc:
            task.set_result(exc.code, f"locks not granted for the rollback: {exc.message}")
            return False
        task.held = acquiring.result()
        task.tokens = locking.tokens_of(task.held, task.locks)
        task.holds_locks = True
        return True

    async def _racquire(self, task: TaskRuntime) -> None:
        if task.force or not await self._reacquire(task):
            task.move(S.RABORTING, self._clock())
            return
        task.move(S.RECOVERING, self._clock())

    async def _recover(self, task: TaskRuntime) -> None:
        if not await self._reacquire(task):
            task.move(S.RABORTING, self._clock())
            return
        stack = task.recoveries
        while stack:
            if task.force:
                task.move(S.RABORTING, self._clock())
                return
            step = stack[-1]
            if step.name != SENTINEL:
                task.set_message(f"running recovery {len(stack)} ({step.name})")
                try:
                    fn = self._registry.get_recovery(step.name)
                    await fn(self._context(task, _Control(self, task, None), None), **step.args)
                except Exception as exc:
                    task.set_result(_error_code(exc), f"recovery {step.name} failed: {exc}")
                    task.move(S.FAILED, self._clock())
                    return
            task.truncate(len(stack) - 1)  # popped only once it ran: a crash re-runs it
            if stack:  # the last pop is committed with the end state, right after
                await self._commit(task)
        task.set_message("rolled back" if not task.reason else f"rolled back after: {task.reason}")
        task.move(S.RECOVERED, self._clock())

    async def _settle(self, task: TaskRuntime) -> None:
        forget = task.done and task.clean is CleanPolicy.AUTO
        await self._commit(task, forget=forget)
        if task.done:
            self._release_locks(task)
        info = task.info()
        for waiter in task.waiters:
            if not waiter.done():
                waiter.set_result(info)
        if forget:
            self._tasks.pop(task.id, None)
            self._recent[task.id] = info
            while len(self._recent) > self._keep_done:
                self._recent.popitem(last=False)
