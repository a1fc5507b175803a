"""``GET /v1/hosts``: the hosts of the cluster, alive or dead, and the pools each one leads.

A single-host store answers with this host alone; a secondary controller (no member of the
cluster) with an empty list. This module must not decide anything: it asks the controller and
renders with :mod:`corral.wire`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fastapi import APIRouter

from corral import wire as models
from corral.api.errors import ERROR_RESPONSES
from corral.api.routes import Admin, Ctx

if TYPE_CHECKING:
    from corral.controller.leadership import HostView

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


@runtime_checkable
class HostSource(Protocol):
    """A controller that knows the cluster's hosts."""

    async def list_hosts(self) -> Sequence[HostView]:
        """Every host and what it leads."""
        ...


def host(view: HostView) -> models.Host:
    """The wire form of one host."""
    return models.Host(
        host_id=view.host_id,
        incarnation=view.incarnation,
        alive=view.alive,
        address=view.address,
        version=view.version,
        config_hash=view.config_hash,
        started_at=view.started_at,
        heartbeat_at=view.heartbeat_at,
        lease_expires_at=view.lease_expires_at,
        leads=list(view.leads),
        tasks=view.tasks,
        this=view.this,
    )


@router.get("/hosts", tags=["cluster"])
async def list_hosts(ctx: Ctx, caller: Admin) -> list[models.Host]:
    """Every host of the cluster (admin): alive or dead, its incarnation, address, version,
    configuration digest, and the pools whose maintenance it leads."""
    controller = ctx.controller
    if not isinstance(controller, HostSource):
        return []
    return [host(v) for v in await controller.list_hosts()]
