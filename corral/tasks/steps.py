"""Named steps (jobs and recoveries) and the context a step runs with.

A task saved by one process is recovered by another, so steps are found by name in a
:class:`StepRegistry`, never by importing a path from a string. A job gets a :class:`JobContext`
through which it pushes its recovery *before* it changes the world (write-ahead), replaces the
recoveries pushed since a sentinel by one coarser recovery, and reports progress. This module
must not touch the store or the locks itself: the engine behind the context does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeAlias

from corral import exceptions
from corral.tasks.model import Step
from corral.types import JSON

SENTINEL = "corral.sentinel"
"""Reserved recovery name marking where :meth:`JobContext.replace_recoveries` stops (vdsm's)."""

StepFunction: TypeAlias = Callable[..., Awaitable[JSON]]
"""``async def step(ctx: JobContext, **args) -> JSON``."""


def check_name(name: object, what: str = "step") -> str:
    """A valid step name (1-255 characters, not the reserved sentinel) or ``InvalidInput``."""
    if not isinstance(name, str) or not 0 < len(name) <= 255 or not name.isprintable():
        raise exceptions.InvalidInput(f"{what} name must be 1-255 printable characters: {name!r}")
    if name == SENTINEL:
        raise exceptions.InvalidInput(f"{what} name {SENTINEL!r} is reserved")
    return name


def dump_args(name: str, args: Mapping[str, object]) -> str:
    """The arguments of step ``name`` as JSON text, or ``InvalidInput`` naming the step."""
    if not all(isinstance(k, str) for k in args):
        raise exceptions.InvalidInput(f"step {name!r}: argument names must be strings")
    try:
        return json.dumps(dict(args), allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise exceptions.InvalidInput(f"step {name!r}: arguments are not JSON: {exc}") from exc


class StepRegistry:
    """Jobs and recoveries by name. Register at import time with the decorators."""

    def __init__(self) -> None:
        self._jobs: dict[str, StepFunction] = {}
        self._recoveries: dict[str, StepFunction] = {}

    def job(self, name: str) -> Callable[[StepFunction], StepFunction]:
        """Decorator registering an ``async def job(ctx, **args) -> JSON`` under ``name``."""
        return self._register(self._jobs, check_name(name, "job"), "job")

    def recovery(self, name: str) -> Callable[[StepFunction], StepFunction]:
        """Decorator registering an ``async def recovery(ctx, **args)`` under ``name``.

        Recoveries must be idempotent and tolerate finding nothing to undo: after a crash the one
        that was running is run again, and a recovery is pushed before its job acts.
        """
        return self._register(self._recoveries, check_name(name, "recovery"), "recovery")

    @staticmethod
    def _register(
        table: dict[str, StepFunction], name: str, kind: str
    ) -> Callable[[StepFunction], StepFunction]:
        def decorator(fn: StepFunction) -> StepFunction:
            if name in table and table[name] is not fn:
                raise exceptions.InvalidInput(f"a {kind} named {name!r} is already registered")
            table[name] = fn
            return fn

        return decorator

    def get_job(self, name: str) -> StepFunction:
        """The job registered under ``name`` or ``UnknownStep``."""
        try:
            return self._jobs[name]
        except KeyError:
            raise exceptions.UnknownStep(f"no job is registered as {name!r}") from None

    def get_recovery(self, name: str) -> StepFunction:
        """The recovery registered under ``name`` or ``UnknownStep``."""
        try:
            return self._recoveries[name]
        except KeyError:
            raise exceptions.UnknownStep(f"no recovery is registered as {name!r}") from None

    def jobs(self) -> list[str]:
        """Registered job names."""
        return sorted(self._jobs)

    def recoveries(self) -> list[str]:
        """Registered recovery names."""
        return sorted(self._recoveries)


class TaskControl(Protocol):
    """What a context asks of the engine (implemented by the engine's per-task runtime)."""

    async def push(self, step: Step, args_text: str) -> None:
        """Commit ``step`` on top of the recovery stack."""
        ...

    async def replace(self, step: Step | None, args_text: str) -> None:
        """Commit: pop back to (and including) the last sentinel, then push ``step``."""
        ...

    def progress(self, text: str) -> None:
        """Record a progress note for the current job."""
        ...


class JobContext:
    """What a running job (or recovery) may do; ``deps`` is the engine's application object."""

    def __init__(
        self,
        *,
        task_id: str,
        verb: str,
        tag: str,
        deps: object,
        registry: StepRegistry,
        control: TaskControl,
        job_index: int | None,
        jobs_total: int,
        tokens: Mapping[str, int] | None = None,
    ) -> None:
        self.task_id = task_id
        self.verb = verb
        self.tag = tag
        self.deps = deps
        self.job_index = job_index
        """0-based index of the running job; ``None`` in a recovery."""
        self.jobs_total = jobs_total
        self._tokens = tokens if tokens is not None else {}
        self._registry = registry
        self._control = control

    def _recovery_step(self, name: str, args: Mapping[str, JSON]) -> tuple[Step, str]:
        if self.job_index is None:
            raise exceptions.TaskError("a recovery cannot push or replace recoveries")
        self._registry.get_recovery(check_name(name, "recovery"))
        return Step(name, dict(args)), dump_args(name, args)

    async def push_recovery(self, name: str, /, **args: JSON) -> None:
        """Commit the recovery ``name(**args)`` on the stack; call it before acting."""
        step, text = self._recovery_step(name, args)
        await self._control.push(step, text)

    async def push_sentinel(self) -> None:
        """Mark the stack so a later :meth:`replace_recoveries` replaces what follows."""
        if self.job_index is None:
            raise exceptions.TaskError("a recovery cannot push or replace recoveries")
        await self._control.push(Step(SENTINEL, {}), "{}")

    async def replace_recoveries(self, name: str, /, **args: JSON) -> None:
        """Replace every recovery pushed since the last sentinel (and the sentinel) by one.

        Without a sentinel on the stack, the whole stack is replaced (as vdsm does).
        """
        step, text = self._recovery_step(name, args)
        await self._control.replace(step, text)

    def lock_token(self, key: str) -> int | None:
        """The fencing token of the task's grant of lock ``key`` (``None`` when it holds none),
        read when the engine got the grant (SPEC §3, issue 11): pass it with a write made under
        the lock, so that the store refuses the write once the grant is gone, and to a backend
        that checks fences. A recovery that had to take the task's locks again (after a restart,
        a takeover, or the rollback of a finished task) runs under a new grant: a newer token."""
        return self._tokens.get(key)

    def progress(self, text: str) -> None:
        """Report progress: shown in the task's message after ``running job i of n``."""
        if not isinstance(text, str):
            raise exceptions.InvalidInput("progress must be a string")
        self._control.progress(text)
