"""Retention (issue 12): forgetting history older than the configured ``history``.

Terminated VMs, ended tickets, done tasks, the audit trail and the backends' command logs are
deleted (all but the command logs in bounded batches of :data:`BATCH` rows per statement),
yielding to the event loop between batches, so a first purge
after weeks of history never holds the store or the loop for long. Unfinished tasks are never
touched; a done task is forgotten through the engine (:meth:`corral.tasks.TaskEngine.clean`) so
its memory and its record go together. This module must not decide anything else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

from corral import exceptions
from corral.store import Store
from corral.tasks import TaskEngine

BATCH = 500
"""Rows deleted per statement at most."""
MAX_BATCHES = 100
"""Batches per kind in one round at most (the next round goes on where this one stopped)."""


class Host(Protocol):
    """What retention needs of the controller."""

    store: Store
    tasks: TaskEngine


@dataclass(frozen=True, slots=True)
class Pruned:
    """How much history one round forgot."""

    vms: int = 0
    tickets: int = 0
    tasks: int = 0
    audit: int = 0
    command_logs: int = 0


async def prune(ctl: Host, before: float, *, batch: int = BATCH) -> Pruned:
    """Forget terminated VMs, ended tickets, done tasks, audit entries and command logs older
    than ``before`` (wall-clock seconds), ``batch`` rows at a time."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise exceptions.InvalidInput(f"batch must be a positive integer, got {batch!r}")
    vms = tickets = audit = 0
    for _ in range(MAX_BATCHES):
        gone_vms, gone_tickets = await ctl.store.pools.purge(before, limit=batch)
        vms, tickets = vms + gone_vms, tickets + gone_tickets
        if gone_vms < batch and gone_tickets < batch:
            break
        await asyncio.sleep(0)
    for _ in range(MAX_BATCHES):
        gone = await ctl.store.pools.purge_audit(before, limit=batch)
        audit += gone
        if gone < batch:
            break
        await asyncio.sleep(0)
    return Pruned(
        vms=vms,
        tickets=tickets,
        tasks=await _tasks(ctl, before, batch),
        audit=audit,
        command_logs=await _command_logs(ctl, before),
    )


async def _command_logs(ctl: Host, before: float) -> int:
    # The repository's purge has no batch limit (its contract predates retention): a command
    # log row is small and the records are written at most a few per VM, so one statement per
    # round stays short; a store without command logs has nothing to forget.
    repository = ctl.store.command_logs
    if repository is None:
        return 0
    return await repository.purge(before)


async def _tasks(ctl: Host, before: float, batch: int) -> int:
    old = [t.id for t in ctl.tasks.list() if t.done and t.updated_at < before]
    done = 0
    for start in range(0, min(len(old), batch * MAX_BATCHES), batch):
        for task_id in old[start : start + batch]:
            try:
                await ctl.tasks.clean(task_id)
            except (exceptions.TaskNotFound, exceptions.TaskNotDone, exceptions.TaskBusy):
                continue  # cleaned meanwhile, or an operator is rolling it back
            done += 1
        await asyncio.sleep(0)
    return done
