"""Durable multi-step operations with rollback (SPEC §4).

``TaskState`` and ``TRANSITIONS`` are the pure state machine; ``StepRegistry`` names the jobs
and recoveries; ``TaskEngine`` runs tasks against a store and a lock manager. See
``docs/tasks.md``. This package must not import the controller, the API or the backends.
"""

from __future__ import annotations

from corral.tasks.engine import TaskEngine
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
