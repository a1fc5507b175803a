"""``GET /v1/vms/{name}/logs``: what the backend's commands printed for one VM (admin only).

This module must not capture anything: the controller's command log writer fills the store.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from corral import exceptions
from corral.api.errors import ERROR_RESPONSES
from corral.api.routes import Admin, Ctx, Name
from corral.store.commandlogs import MAX_LIST, CommandLog
from corral.wire import CommandLogEntry

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


def entry(log: CommandLog) -> CommandLogEntry:
    """The wire form of a stored record."""
    return CommandLogEntry(
        id=log.id,
        vm=log.vm,
        pool=log.pool,
        command=log.command,
        argv=list(log.argv),
        exit_status=log.exit_status,
        duration=log.duration,
        stdout=log.stdout,
        stderr=log.stderr,
        at=log.at,
    )


async def vm_logs(ctx: Ctx, name: str, after: int, limit: int) -> list[CommandLog]:
    """The records of VM ``name`` (``VMNotFound`` for an unknown VM)."""
    await ctx.controller.get_vm(name)
    repository = ctx.controller.store.command_logs
    if repository is None:
        raise exceptions.CorralError("this store keeps no command logs")
    return await repository.for_vm(name, after=after, limit=limit)


@router.get("/vms/{name}/logs", tags=["vms"])
async def get_vm_logs(
    name: Name,
    ctx: Ctx,
    caller: Admin,
    after: Annotated[int, Query(ge=0, description="Only records with a larger id (follow).")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = 100,
) -> list[CommandLogEntry]:
    """The backend commands run for the VM, oldest first: argv, exit status, duration, stdout
    (its first 16 KiB) and stderr (its last 16 KiB)."""
    return [entry(log) for log in await vm_logs(ctx, name, after, limit)]
