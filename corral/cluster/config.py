"""The ``cluster:`` section of the configuration: this host's id, its lease, its address.

Only used when the store is PostgreSQL (several hosts); a single-host store ignores it except
for the id shown by ``corral hosts``. Environment: ``CORRAL_CLUSTER_HOST_ID``,
``CORRAL_CLUSTER_LEASE``, ``CORRAL_CLUSTER_ADDRESS``. This module must not do I/O.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import pydantic
from pydantic import Field

DEFAULT_LEASE = 15.0
"""Seconds a host (and a pool's leader) lives without a heartbeat."""


class ClusterConfig(pydantic.BaseModel):
    """This host in a cluster of ``corral serve`` processes on one PostgreSQL."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    host_id: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"^[^#\s]+$")
    """A stable id for this host (default: the machine's host name); no spaces, no '#'."""
    lease: float = Field(default=DEFAULT_LEASE, gt=0.0, lt=86400.0)
    """Seconds without a heartbeat after which the host is dead and its pools change hands."""
    address: str = Field(default="", max_length=255)
    """Where the host's API is reachable (shown by ``corral hosts``; default: its listen URL)."""


def env_overrides(env: Mapping[str, str], prefix: str) -> dict[str, object]:
    """The ``cluster`` keys the environment sets (strings converted where a number is due;
    a malformed number is left as text so that validation names it)."""
    out: dict[str, object] = {}
    if (host := env.get(f"{prefix}CLUSTER_HOST_ID")) is not None:
        out["host_id"] = host
    if (lease := env.get(f"{prefix}CLUSTER_LEASE")) is not None:
        try:
            out["lease"] = float(lease)
        except ValueError:
            out["lease"] = lease
    if (address := env.get(f"{prefix}CLUSTER_ADDRESS")) is not None:
        out["address"] = address
    return out


def pools_hash(pools: Mapping[str, pydantic.BaseModel]) -> str:
    """A digest of the pool configuration: hosts that disagree on it are warned about."""
    canonical = json.dumps(
        {name: pool.model_dump(mode="json") for name, pool in sorted(pools.items())},
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]
