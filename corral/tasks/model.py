"""Values of the task engine: policies, priorities, steps, the public task snapshot, events.

Plain frozen data; must not import asyncio or the store.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral.tasks.states import TaskState
from corral.types import JSON


class Priority(enum.StrEnum):
    """Queue priority: high runs before medium before low, FIFO within one."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


PRIORITY_RANK: Mapping[Priority, int] = {Priority.HIGH: 0, Priority.MEDIUM: 1, Priority.LOW: 2}


class RecoveryPolicy(enum.StrEnum):
    """What follows a failure: end ``failed``, wait for an operator, roll back, or resume."""

    NONE = "none"
    MANUAL = "manual"
    AUTO = "auto"
    RESUME = "resume"
    """After a crash, re-run the interrupted job (idempotent jobs); a live failure rolls back."""


class PersistPolicy(enum.StrEnum):
    """Whether the task is written to the store (``auto``) or lives only in memory."""

    NONE = "none"
    AUTO = "auto"


class CleanPolicy(enum.StrEnum):
    """Whether a done task is forgotten at once (``auto``) or kept until cleaned."""

    AUTO = "auto"
    MANUAL = "manual"


@dataclass(frozen=True, slots=True)
class Step:
    """A job or recovery: a registered step name and its JSON keyword arguments."""

    name: str
    args: Mapping[str, JSON] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one task (what ``show`` and ``wait`` return).

    ``code`` is ``"ok"`` while nothing failed, else the stable code of the first error
    (a ``CorralError``'s code, or ``"error"``); ``message`` says ``running job i of n`` while a
    job runs.
    """

    id: str
    verb: str
    tag: str
    state: TaskState
    code: str
    message: str
    result: JSON
    priority: Priority
    recovery: RecoveryPolicy
    persist: PersistPolicy
    clean: CleanPolicy
    jobs_done: int
    jobs_total: int
    jobs: tuple[str, ...]
    recoveries: tuple[str, ...]
    """Names on the recovery stack, bottom first."""
    locks: Mapping[str, str]
    created_at: float
    updated_at: float

    @property
    def done(self) -> bool:
        """Whether the task is in a done state."""
        return self.state in (TaskState.FINISHED, TaskState.RECOVERED, TaskState.FAILED)


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """A committed state change, as given to :meth:`TaskEngine.subscribe` callbacks."""

    task_id: str
    previous: TaskState
    state: TaskState
    info: TaskInfo
    """The task as of the commit that contains this change (changes made without an outside
    effect between them share a commit, so ``info.state`` may already be a later state)."""
