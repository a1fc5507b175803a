"""Durable multi-step operations with a rollback stack, persisted and recovered after a crash.

``TaskState`` and ``TRANSITIONS`` are the pure state machine; ``StepRegistry`` names the jobs
and recoveries; ``TaskEngine`` runs tasks against a store and a lock manager. See
``docs/tasks.md``. This package must not import the controller, the API or the backends.

``TaskEngine`` is imported on first use (PEP 562), so that ``import corral.tasks.states`` (or
``model``, ``steps``) loads the pure table without asyncio, the engine and the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.tasks.model import (
    CleanPolicy,
    PersistPolicy,
    Priority,
    RecoveryPolicy,
    Step,
    TaskEvent,
    TaskInfo,
)
from corral.tasks.states import (
    ABORTABLE,
    DONE,
    RECOVERY_ABORTABLE,
    TRANSITIONS,
    StateMachine,
    TaskState,
)
from corral.tasks.steps import SENTINEL, JobContext, StepRegistry

if TYPE_CHECKING:
    from corral.tasks.engine import TaskEngine

__all__ = [
    "ABORTABLE",
    "DONE",
    "RECOVERY_ABORTABLE",
    "SENTINEL",
    "TRANSITIONS",
    "CleanPolicy",
    "JobContext",
    "PersistPolicy",
    "Priority",
    "RecoveryPolicy",
    "StateMachine",
    "Step",
    "StepRegistry",
    "TaskEngine",
    "TaskEvent",
    "TaskInfo",
    "TaskState",
]


def __getattr__(name: str) -> object:
    """Import the engine (asyncio, the store) only when ``corral.tasks.TaskEngine`` is used."""
    if name == "TaskEngine":
        from corral.tasks.engine import TaskEngine

        return TaskEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
