"""The task state machine of SPEC §4: the 14 states, the transition table, and nothing else.

Pure: no asyncio, no store, no clock. Everything that decides whether a task may change state
lives here; the engine only asks. The state diagram in ``docs/tasks.md`` is generated from
:data:`TRANSITIONS` by :func:`mermaid` (``python -m corral.tasks.diagram docs/tasks.md``;
a test checks it).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from corral import exceptions


class TaskState(enum.StrEnum):
    """Where a task is in its life (vdsm's states)."""

    INIT = "init"
    PREPARING = "preparing"
    BLOCKED = "blocked"
    ACQUIRING = "acquiring"
    QUEUED = "queued"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTING = "aborting"
    WAITRECOVER = "waitrecover"
    RACQUIRING = "racquiring"
    RECOVERING = "recovering"
    RABORTING = "raborting"
    RECOVERED = "recovered"
    FAILED = "failed"


S = TaskState

TRANSITIONS: Mapping[TaskState, frozenset[TaskState]] = MappingProxyType(
    {
        S.INIT: frozenset({S.PREPARING}),
        S.PREPARING: frozenset({S.BLOCKED, S.ACQUIRING, S.FINISHED, S.ABORTING}),
        S.BLOCKED: frozenset({S.PREPARING, S.ABORTING}),
        S.ACQUIRING: frozenset({S.ACQUIRING, S.QUEUED, S.ABORTING}),
        S.QUEUED: frozenset({S.RUNNING, S.ABORTING}),
        S.RUNNING: frozenset({S.QUEUED, S.FINISHED, S.ABORTING}),
        S.FINISHED: frozenset({S.RACQUIRING}),
        S.ABORTING: frozenset({S.WAITRECOVER, S.RACQUIRING, S.FAILED}),
        S.WAITRECOVER: frozenset({S.RACQUIRING, S.RABORTING}),
        S.RACQUIRING: frozenset({S.RACQUIRING, S.RECOVERING, S.RABORTING}),
        S.RECOVERING: frozenset({S.RECOVERED, S.RABORTING, S.FAILED}),
        S.RABORTING: frozenset({S.FAILED}),
        S.RECOVERED: frozenset(),
        S.FAILED: frozenset(),
    }
)
"""Every allowed move, SPEC §4's table exactly: ``TRANSITIONS[from]`` is the set of ``to``."""

DONE: frozenset[TaskState] = frozenset({S.FINISHED, S.RECOVERED, S.FAILED})
"""States a task ends in (a finished task may still be rolled back)."""

ABORTABLE: frozenset[TaskState] = frozenset(
    {S.PREPARING, S.BLOCKED, S.ACQUIRING, S.QUEUED, S.RUNNING}
)
"""States in which ``stop`` aborts the task."""

RECOVERY_ABORTABLE: frozenset[TaskState] = frozenset({S.RACQUIRING, S.RECOVERING, S.WAITRECOVER})
"""States in which ``stop(force=True)`` aborts the task's recovery."""


def can_move(src: TaskState, dst: TaskState) -> bool:
    """Whether the table allows ``src`` → ``dst``."""
    return dst in TRANSITIONS[src]


def check_move(src: TaskState, dst: TaskState) -> TaskState:
    """Return ``dst`` if ``src`` → ``dst`` is allowed, else raise ``TaskStateTransitionError``."""
    if dst not in TRANSITIONS[src]:
        raise exceptions.TaskStateTransitionError(
            f"a task cannot move from {src.value} to {dst.value}"
        )
    return dst


class StateMachine:
    """One task's state; :meth:`move` changes it only along :data:`TRANSITIONS`."""

    __slots__ = ("state",)

    def __init__(self, state: TaskState = TaskState.INIT) -> None:
        self.state = TaskState(state)

    def move(self, dst: TaskState) -> TaskState:
        """Move to ``dst`` and return the previous state; an illegal move changes nothing."""
        src = self.state
        self.state = check_move(src, dst)
        return src

    @property
    def done(self) -> bool:
        """Whether the task is in a done state."""
        return self.state in DONE


def mermaid() -> str:
    """The state diagram of :data:`TRANSITIONS` as a Mermaid ``stateDiagram-v2`` block."""
    lines = ["```mermaid", "stateDiagram-v2", "    [*] --> init"]
    for src in TaskState:
        for dst in sorted(TRANSITIONS[src], key=list(TaskState).index):
            lines.append(f"    {src.value} --> {dst.value}")
    for state in (S.RECOVERED, S.FAILED):
        lines.append(f"    {state.value} --> [*]")
    lines.append("```")
    return "\n".join(lines) + "\n"
