"""Retention through the controller (issue 12): done tasks and history forgotten, in batches.

What each test catches: done tasks kept forever (no task purge), an unfinished task forgotten,
a purge stopping after its first batch, maintenance not running the retention at all, command
logs never pruned.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from corral import exceptions
from corral.controller import retention
from corral.controller.steps import REGISTRY
from corral.store.commandlogs import CommandLog
from corral.store.pools import AuditEntry
from corral.tasks import Step

from .conftest import controller

GATE: dict[str, asyncio.Event] = {}

if "test.retention.wait" not in REGISTRY.jobs():

    @REGISTRY.job("test.retention.wait")
    async def _wait(ctx: Any, *, name: str) -> Any:
        await GATE.setdefault(name, asyncio.Event()).wait()
        return None


async def test_prune_forgets_done_tasks_and_history_in_batches() -> None:
    async with controller({"min_ready": 0}) as ctl:
        done = [
            await ctl.tasks.submit("noop", jobs=[], clean="manual", recovery="none")
            for _ in range(5)
        ]
        for task_id in done:
            await ctl.tasks.wait(task_id, timeout=10)
        GATE["running"] = asyncio.Event()
        running = await ctl.tasks.submit(
            "wait", jobs=[Step("test.retention.wait", {"name": "running"})], clean="manual"
        )
        now = time.time()  # recent: the maintenance loop's own purge leaves them
        for i in range(7):
            await ctl.store.pools.add_audit(AuditEntry(now - i, "root", "hold", "vm", f"v{i}"))
        pruned = await retention.prune(ctl, time.time() + 1, batch=2)
        assert pruned.tasks == 5 and pruned.audit == 7
        assert [t.id for t in ctl.tasks.list()] == [running]
        for task_id in done:
            with pytest.raises(exceptions.TaskNotFound):
                ctl.tasks.show(task_id)
        GATE["running"].set()
        await ctl.tasks.wait(running, timeout=10)
        with pytest.raises(exceptions.InvalidInput):
            await retention.prune(ctl, 0.0, batch=0)


async def test_maintenance_runs_the_retention() -> None:
    async with controller({"min_ready": 0}) as ctl:
        await ctl.store.pools.add_audit(AuditEntry(time.time(), "root", "hold", "vm", "old"))
        task_id = await ctl.tasks.submit("noop", jobs=[], clean="manual", recovery="none")
        await ctl.tasks.wait(task_id, timeout=10)
        assert ctl.config.history is not None
        await ctl.maintenance.purge(time.time() + ctl.config.history + 1)
        assert await ctl.store.pools.list_audit() == []
        assert ctl.tasks.list() == []


async def test_prune_forgets_old_command_logs_only() -> None:
    """Catches: retention not calling the command logs' purge (the old records stay), or
    purging with the wrong bound (the recent record goes too)."""
    async with controller({"min_ready": 0}) as ctl:
        logs = ctl.store.command_logs
        assert logs is not None
        now = time.time()
        for at in (now - 100, now - 50, now + 100):
            await logs.add(CommandLog("vm-1", "p", "new", ("./new",), 0, 0.1, "x", "", at))
        pruned = await retention.prune(ctl, now)
        assert pruned.command_logs == 2
        assert [log.at for log in await logs.for_vm("vm-1")] == [now + 100]
