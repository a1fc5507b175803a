"""The durable task engine (SPEC §4): submit, run, stop, roll back and recover tasks.

Each task is driven by one asyncio task (:meth:`TaskEngine._drive`) through the states of
:mod:`corral.tasks.states`. Write-ahead: with persist ``auto``, a change is committed before
anything outside the engine can depend on it — before a job acts (its recovery push commits every
change made so far in the same transaction), before locks are released, before waiters and
subscribers are told. Consecutive changes with no outside effect between them share one
transaction (see ``docs/tasks.md`` for why that is still write-ahead). Must not do blocking I/O:
the store runs its SQL in worker threads.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import enum
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from corral import exceptions
from corral.store import Store
from corral.store.tasks import TaskRepository
from corral.store.types import JSON
from corral.tasks import locking
from corral.tasks.model import (
    CleanPolicy,
    PersistPolicy,
    Priority,
    RecoveryPolicy,
    Step,
    TaskEvent,
    TaskInfo,
)
from corral.tasks.queue import RunQueue
from corral.tasks.runtime import CODE_OK, TaskRuntime
from corral.tasks.states import ABORTABLE, DONE, RECOVERY_ABORTABLE, TaskState, check_move
from corral.tasks.steps import SENTINEL, JobContext, StepRegistry, check_name, dump_args

log = logging.getLogger(__name__)
S = TaskState
E = TypeVar("E", bound=enum.StrEnum)
T = TypeVar("T")
Subscriber = Callable[[TaskEvent], None]


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


def _error_code(exc: BaseException) -> str:
    return exc.code if isinstance(exc, exceptions.CorralError) else "error"


class _Control:
    """The engine side of one job's :class:`JobContext`."""

    def __init__(self, engine: TaskEngine, task: TaskRuntime, index: int | None) -> None:
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


class TaskEngine:
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
        self._repo: TaskRepository | None = store.tasks if store is not None else None
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
        self._started = False
        self._closed = False
        # uuid4 from a generator seeded by the OS once: os.urandom per id costs ~100 µs in some
        # sandboxes; ids need to be unique, not secret
        self._ids = random.Random(os.urandom(32))  # noqa: S311

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover every task the store holds (SPEC §4), then accept work."""
        if self._started:
            raise exceptions.TaskError("the engine is already started")
        self._started = True
        if self._repo is None:
            return
        for stored in await self._repo.load_all():
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

    def _spawn(self, coro: collections.abc.Coroutine[object, object, None]) -> asyncio.Task[None]:
        job = asyncio.get_running_loop().create_task(coro)
        self._background.add(job)
        job.add_done_callback(self._background.discard)
        return job

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
        """Create a task and start it; return its id once it is durable (persist ``auto``)."""
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
            task_id=str(uuid.UUID(int=self._ids.getrandbits(128), version=4)),
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
        await self._commit(task)
        self._tasks[task.id] = task
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
        """Abort the task; a task in recovery is only aborted with ``force``."""
        task = self._get(task_id)
        state = task.state
        if state in ABORTABLE:
            task.stop_requested = True
            self._interrupt(task)
        elif state in RECOVERY_ABORTABLE and force:
            task.stop_requested = task.force = True
            if state is S.WAITRECOVER:
                await self._idle(task)
                task.move(S.RABORTING, self._clock())
                task.driver = self._spawn(self._drive(task))
            else:
                self._interrupt(task)
        return task.info()

    async def rollback(self, task_id: str) -> TaskInfo:
        """Roll back a finished task or one waiting in ``waitrecover`` (re-acquires locks)."""
        task = self._get(task_id)
        check_move(task.state, S.RACQUIRING)
        await self._idle(task)
        check_move(task.state, S.RACQUIRING)
        task.stop_requested = task.force = False
        task.reason = "rollback requested" if task.state is S.FINISHED else task.reason
        task.move(S.RACQUIRING, self._clock())
        task.set_message("rolling back")
        await self._commit(task)
        task.driver = self._spawn(self._drive(task))
        return task.info()

    async def clean(self, task_id: str) -> None:
        """Forget a done task (and delete its record)."""
        task = self._tasks.get(task_id)
        if task is None:
            if self._recent.pop(task_id, None) is None:
                raise exceptions.TaskNotFound(f"no task {task_id}")
            return
        if not task.done:
            raise exceptions.TaskNotDone(f"task {task_id} is {task.state.value}, not done")
        await self._idle(task)
        await self._commit(task, forget=True)
        del self._tasks[task_id]

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

    async def _idle(self, task: TaskRuntime) -> None:
        """Let a driver that is only settling the task finish first."""
        if task.driver is not None and not task.driver.done():
            await asyncio.shield(task.driver)

    def _interrupt(self, task: TaskRuntime) -> None:
        if task.interruptible is not None and not task.in_persist:
            task.interruptible.cancel()

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

    async def _drive(self, task: TaskRuntime) -> None:
        try:
            while not await self._step(task):
                pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Only the store or an engine bug gets here; the persisted state is what counts
            # and the next start recovers from it. Locks stay held: the world is unknown.
            log.exception("task %s: engine failure in %s", task.id, task.state.value)
            task.broken = exc
            for waiter in task.waiters:
                if not waiter.done():
                    waiter.set_exception(exceptions.StoreError(f"task {task.id} stopped: {exc}"))
        finally:
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
                acquiring = asyncio.ensure_future(
                    locking.acquire(self._locks, task.locks, owner=task.id, on_wait=on_wait)
                )
                if not await self._interruptible(task, acquiring):
                    self._abort(task, "task_aborted", "stopped while waiting for locks")
                    return
                task.held = acquiring.result()
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
