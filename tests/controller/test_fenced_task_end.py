"""A VM task that ended because this host lost the right to act is not followed by this host's
own after-task check of the VM (issue 11): the VM is the right holder's now (a survivor, the
lock's next holder, the leader's orphan watch), and the check's write would carry no fence.

Breakage caught: a refusal's code missing from ``vmtasks.FENCED`` — a backend's refusal of a
stale fencing token (``StaleFence``) once was, and the host then moved a VM the survivor owned.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

import pytest

from corral import exceptions
from corral.controller.vmtasks import VMTasks
from corral.tasks import Step, TaskEvent, TaskState
from corral.tasks.model import CleanPolicy, PersistPolicy, Priority, RecoveryPolicy, TaskInfo


class _Tasks:
    async def submit(self, verb: str, **_: object) -> str:
        return "t1"


class _Host:
    """The part of the controller ``VMTasks.on_task`` uses: records what it would start."""

    stopped = False

    def __init__(self) -> None:
        self.tasks = _Tasks()
        self.started: list[str] = []

    def background(self, coro: Coroutine[Any, Any, None]) -> None:
        self.started.append(coro.__qualname__)
        coro.close()


def _ended(code: str) -> TaskEvent:
    info = TaskInfo(
        id="t1",
        verb="terminate",
        tag="vm:p-000001",
        state=TaskState.FAILED,
        code=code,
        message="",
        result=None,
        priority=Priority.HIGH,
        recovery=RecoveryPolicy.RESUME,
        persist=PersistPolicy.NONE,
        clean=CleanPolicy.AUTO,
        jobs_done=0,
        jobs_total=1,
        jobs=("vm.terminate",),
        recoveries=(),
        locks={"vm/p-000001": "exclusive"},
        created_at=0.0,
        updated_at=0.0,
    )
    return TaskEvent(task_id="t1", previous=TaskState.RUNNING, state=TaskState.FAILED, info=info)


async def _end_with(code: str) -> list[str]:
    host = _Host()
    tasks = VMTasks(host)  # type: ignore[arg-type]
    await tasks.submit("terminate", Step("vm.terminate", {"name": "p-000001"}), "p-000001")
    tasks.on_task(_ended(code))
    assert not tasks.busy("p-000001")
    return host.started


@pytest.mark.parametrize(
    "error",
    [
        exceptions.StaleFence,
        exceptions.StaleToken,
        exceptions.StaleEpoch,
        exceptions.TaskTakenOver,
        exceptions.LeaseLost,
    ],
)
async def test_a_task_fenced_off_its_vm_is_not_followed_by_a_check(
    error: type[exceptions.CorralError],
) -> None:
    assert await _end_with(error.code) == []


async def test_a_task_that_failed_otherwise_is_followed_by_a_check() -> None:
    """The control: the same ending with a plain backend error checks the VM."""
    assert await _end_with(exceptions.BackendError.code) == ["VMTasks.after_task"]
