"""Status records of the lock table: what ``corral locks`` and ``GET /v1/locks`` show.

Plain frozen values built on demand by :meth:`LockTable.status`; this module must not import the
table or any manager.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from corral.locks.keys import Mode


@dataclass(frozen=True, slots=True)
class HolderStatus:
    """One holder of a resource: who, in which mode, since when (manager clock), its token."""

    owner: str
    mode: Mode
    since: float
    token: int


@dataclass(frozen=True, slots=True)
class WaiterStatus:
    """One request waiting for a resource, in queue order (a pending upgrade comes first)."""

    owner: str
    mode: Mode
    since: float
    upgrade: bool = False


@dataclass(frozen=True, slots=True)
class ResourceStatus:
    """A resource that is held or waited for.

    ``mode`` is the mode it is held in (``None`` if nobody holds it), ``token`` the newest
    fencing token issued for it.
    """

    key: str
    mode: Mode | None
    holders: tuple[HolderStatus, ...]
    queue: tuple[WaiterStatus, ...]
    token: int

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict of this record."""
        return {
            "key": self.key,
            "mode": None if self.mode is None else str(self.mode),
            "token": self.token,
            "holders": [
                {"owner": h.owner, "mode": str(h.mode), "since": h.since, "token": h.token}
                for h in self.holders
            ],
            "queue": [
                {"owner": w.owner, "mode": str(w.mode), "since": w.since, "upgrade": w.upgrade}
                for w in self.queue
            ],
        }


class StatusSource(Protocol):
    """Any lock manager, as the surfaces see it: in-process or PostgreSQL (``PgLockManager``)."""

    def status(self) -> list[ResourceStatus]:
        """Every held or awaited resource: mode, holders, queue."""
        ...
