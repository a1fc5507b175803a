"""Where the cluster keeps its hosts and leadership leases: the interface and the memory twin.

:class:`ClusterRepository` is what the membership service and leadership use; the PostgreSQL
implementation is :class:`corral.cluster.pgrepo.PgCluster`, and :class:`MemoryCluster` (here) is
the in-process one: the store of a single host (SQLite, memory) and fast tests, where several
"hosts" in one process share one :class:`MemoryCluster`. Both pass the contract suite
``tests/cluster/test_repository_contract.py``.

Times are seconds on the repository's clock (the database's for PostgreSQL, an injected clock
here): every lease is written and judged on that one clock. The lease rules themselves are the
pure :mod:`corral.cluster.leases`; this module must not add rules of its own.
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from corral import exceptions
from corral.cluster import leases
from corral.cluster.hosts import HostRecord


@dataclass(frozen=True, slots=True)
class HostInfo:
    """What a host registers: its address, version and the hash of its pool configuration."""

    address: str = ""
    version: str = ""
    config_hash: str = ""


def task_host(host_id: str, incarnation: int) -> str:
    """How a task records the host incarnation that runs it: ``host_id#incarnation``."""
    return f"{host_id}#{incarnation}"


class ClusterRepository(Protocol):
    """Hosts with leases and leadership leases with fencing epochs."""

    async def now(self) -> float:
        """The repository's clock (every lease is judged on it)."""
        ...

    async def register(self, host_id: str, session: str, lease: float, info: HostInfo) -> int:
        """Register ``host_id`` under a new ``session``; its new incarnation (1, 2, ...)."""
        ...

    async def heartbeat(self, session: str) -> bool:
        """Renew the host lease of ``session``; False if it lapsed or was superseded."""
        ...

    async def resign(self, session: str) -> None:
        """End the host lease of ``session`` now (a clean stop)."""
        ...

    async def list_hosts(self) -> builtins.list[HostRecord]:
        """Every registered host, by id, with ``alive`` judged now."""
        ...

    async def take_lease(
        self, name: str, holder: str, session: str, duration: float
    ) -> leases.Lease:
        """Take or renew ``name`` (:func:`leases.take`); ``LeaseHeld`` if another live session
        holds it; ``LeaseLost`` if ``session``'s own host lease is not live."""
        ...

    async def release_lease(self, name: str, session: str) -> None:
        """Give ``name`` up if ``session`` holds it (the next taker gets a new epoch)."""
        ...

    async def check_lease(self, name: str, session: str, epoch: int) -> None:
        """``StaleEpoch`` unless ``session`` holds ``name`` live under ``epoch``."""
        ...

    async def list_leases(self) -> builtins.list[leases.Lease]:
        """Every lease, by name."""
        ...

    async def claim_tasks(self, dead: str, me: str, host_id: str, incarnation: int) -> list[str]:
        """Move every task of host incarnation ``dead`` (``task_host``) to ``me`` in one
        conditional update, only if incarnation ``incarnation`` of ``host_id`` is dead (its
        lease lapsed, or a newer incarnation superseded it); the ids moved."""
        ...

    async def task_hosts(self) -> dict[str, int]:
        """Host incarnation -> number of its unfinished tasks (the ones a takeover moves)."""
        ...

    async def busy_tags(self) -> set[str]:
        """The tags of every unfinished task of any host (``vm:<name>``: a VM some host's
        task works on, or a dead host's task not yet recovered)."""
        ...

    async def claim_legacy(self, me: str) -> list[str]:
        """Give ``me`` the tasks no host owns (rows from before tasks had a host); the ids of
        every task ``me`` owns now (the ones it recovers at start)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def stale(name: str, epoch: int, lease: leases.Lease | None, now: float) -> exceptions.StaleEpoch:
    """The refusal of a write under ``epoch`` of ``name``, saying what the lease is now."""
    if lease is None:
        return exceptions.StaleEpoch(f"epoch {epoch} of {name!r} is stale: nobody leads it")
    state = "live" if lease.live(now) else "lapsed"
    return exceptions.StaleEpoch(
        f"epoch {epoch} of {name!r} is stale: it is at epoch {lease.epoch} ({state}, "
        f"held by {lease.holder!r})"
    )


class MemoryCluster:
    """:class:`ClusterRepository` in one process (dicts and an injected clock)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._hosts: dict[str, HostRecord] = {}
        self._leases: dict[str, leases.Lease] = {}

    async def now(self) -> float:
        """The injected clock."""
        return self._clock()

    def _live_session(self, session: str, now: float) -> HostRecord | None:
        for host in self._hosts.values():
            if host.session == session and now <= host.lease_expires_at:
                return host
        return None

    async def register(self, host_id: str, session: str, lease: float, info: HostInfo) -> int:
        """Register ``host_id``: incarnation + 1, the previous session superseded at once."""
        from corral.cluster.hosts import validate_lease

        lease = validate_lease(lease)
        now = self._clock()
        old = self._hosts.get(host_id)
        incarnation = 1 if old is None else old.incarnation + 1
        self._hosts[host_id] = HostRecord(
            host_id,
            incarnation,
            session,
            info.address,
            info.version,
            info.config_hash,
            now,
            now,
            lease,
            now + lease,
            alive=True,
        )
        return incarnation

    async def heartbeat(self, session: str) -> bool:
        """Renew a live host lease; a lapsed one is not revived."""
        now = self._clock()
        host = self._live_session(session, now)
        if host is None:
            return False
        self._hosts[host.host_id] = replace(
            host, heartbeat_at=now, lease_expires_at=now + host.lease
        )
        return True

    async def resign(self, session: str) -> None:
        """End the lease of ``session``."""
        for host in list(self._hosts.values()):
            if host.session == session:
                self._hosts[host.host_id] = replace(host, lease_expires_at=0.0)

    async def list_hosts(self) -> builtins.list[HostRecord]:
        """Every host, by id."""
        now = self._clock()
        return [replace(h, alive=now <= h.lease_expires_at) for _, h in sorted(self._hosts.items())]

    async def take_lease(
        self, name: str, holder: str, session: str, duration: float
    ) -> leases.Lease:
        """:func:`leases.take`, only for a session whose host lease is live."""
        now = self._clock()
        if self._live_session(session, now) is None:
            raise exceptions.LeaseLost(f"session {session!r} has no live host lease")
        taken = leases.take(self._leases.get(name), name, holder, session, now, duration)
        self._leases[name] = taken
        return taken

    async def release_lease(self, name: str, session: str) -> None:
        """:func:`leases.release`."""
        if (lease := self._leases.get(name)) is not None:
            self._leases[name] = leases.release(lease, session)

    async def check_lease(self, name: str, session: str, epoch: int) -> None:
        """Refuse unless ``session`` holds ``name`` live under ``epoch``."""
        now = self._clock()
        lease = self._leases.get(name)
        if lease is None or lease.session != session or lease.epoch != epoch:
            raise stale(name, epoch, lease, now)
        try:
            leases.check(lease, epoch, now)
        except exceptions.StaleToken:
            raise stale(name, epoch, lease, now) from None

    async def list_leases(self) -> builtins.list[leases.Lease]:
        """Every lease, by name."""
        return [lease for _, lease in sorted(self._leases.items())]

    async def claim_tasks(self, dead: str, me: str, host_id: str, incarnation: int) -> list[str]:
        """Nothing to move: an in-process store's tasks carry no host (single host)."""
        return []

    async def task_hosts(self) -> dict[str, int]:
        """Empty: see :meth:`claim_tasks`."""
        return {}

    async def busy_tags(self) -> set[str]:
        """Empty: see :meth:`claim_tasks` (the controller knows its own tasks)."""
        return set()

    async def claim_legacy(self, me: str) -> list[str]:
        """Empty: see :meth:`claim_tasks`."""
        return []

    async def close(self) -> None:
        """Nothing to release."""
