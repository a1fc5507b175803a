"""The cluster repository on PostgreSQL: hosts, leadership leases and task ownership in SQL.

Every rule is one statement judged on the database's clock (``corral_lock_now()`` of migration
0007), so hosts whose clocks differ still agree: a lease is taken by one conditional upsert,
checked by one conditional read, and a dead host's tasks move to a survivor by one conditional
update on the task's host incarnation (two survivors racing split nothing twice: each row moves
once). The rules are the pure :mod:`corral.cluster.leases`, transcribed; the contract suite runs
both this and :class:`corral.cluster.repository.MemoryCluster`.

One autocommit connection per repository, used by one statement at a time; a lost connection is
opened again once per call. This module must not keep state beyond that connection.
"""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg

from corral import exceptions
from corral.cluster import leases
from corral.cluster.hosts import _HEARTBEAT, _LIST, _REGISTER, _RESIGN, HostRecord, validate_lease
from corral.cluster.repository import HostInfo, stale

_NOW = "SELECT corral_lock_now()"

# Take or renew: a live holder's own session keeps its epoch; a lapsed or free lease goes to the
# caller with epoch + 1; a lease another live session holds is left alone (no row returned).
_TAKE = """
WITH me AS (
  SELECT corral_lock_now() AS now FROM cluster_hosts
  WHERE session = %(session)s AND lease_expires_at >= corral_lock_now()
)
INSERT INTO cluster_leases AS l (name, holder, session, epoch, expires_at)
SELECT %(name)s, %(holder)s, %(session)s, 1, me.now + %(duration)s FROM me
ON CONFLICT (name) DO UPDATE SET
  holder = EXCLUDED.holder, session = EXCLUDED.session, expires_at = EXCLUDED.expires_at,
  epoch = CASE WHEN l.session = EXCLUDED.session AND l.expires_at >= corral_lock_now()
               THEN l.epoch ELSE l.epoch + 1 END
WHERE l.session IS NULL OR l.session = EXCLUDED.session OR l.expires_at < corral_lock_now()
RETURNING epoch, expires_at
"""

_HOST_LIVE = """
SELECT 1 FROM cluster_hosts WHERE session = %s AND lease_expires_at >= corral_lock_now()
"""

_RELEASE = """
UPDATE cluster_leases SET holder = NULL, session = NULL, expires_at = 0
WHERE name = %s AND session = %s
"""

_GET = "SELECT name, holder, session, epoch, expires_at FROM cluster_leases WHERE name = %s"
_LEASES = "SELECT name, holder, session, epoch, expires_at FROM cluster_leases ORDER BY name"

_CHECK = """
SELECT 1 FROM cluster_leases
WHERE name = %s AND session = %s AND epoch = %s AND expires_at >= corral_lock_now()
"""

# One conditional update: the dead incarnation's unfinished tasks, only while the host row says
# that incarnation is over (lapsed lease, or superseded by a newer incarnation).
_CLAIM = """
UPDATE tasks SET host = %(me)s
WHERE host = %(dead)s AND state NOT IN ('finished', 'recovered', 'failed')
  AND EXISTS (
    SELECT 1 FROM cluster_hosts
    WHERE host_id = %(host_id)s
      AND (incarnation > %(incarnation)s OR lease_expires_at < corral_lock_now()))
RETURNING id
"""

_LEGACY = """
WITH moved AS (UPDATE tasks SET host = %(me)s WHERE host = '' RETURNING id)
SELECT id FROM moved UNION SELECT id FROM tasks WHERE host = %(me)s
"""

_BUSY_TAGS = """
SELECT DISTINCT tag FROM tasks WHERE state NOT IN ('finished', 'recovered', 'failed')
"""

_TASK_HOSTS = """
SELECT host, count(*) FROM tasks
WHERE host <> '' AND state NOT IN ('finished', 'recovered', 'failed')
GROUP BY host
"""


def plain_url(url: str) -> str:
    """A libpq URL from corral's store URL spelling (``postgresql+psycopg://`` accepted)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if not url.startswith("postgresql://"):
        raise exceptions.InvalidInput(f"the cluster needs a postgresql:// URL, got {url!r}")
    return url


def _lease(row: tuple[Any, ...]) -> leases.Lease:
    name, holder, session, epoch, expires = row
    return leases.Lease(name, holder, session, int(epoch), float(expires))


class PgCluster:
    """:class:`corral.cluster.repository.ClusterRepository` on a migrated PostgreSQL database."""

    def __init__(self, url: str) -> None:
        self._url = plain_url(url)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()

    async def _rows(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> list[tuple[Any, ...]]:
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._conn is None or self._conn.closed:
                        self._conn = await psycopg.AsyncConnection.connect(
                            self._url, autocommit=True, connect_timeout=10
                        )
                    cur = await self._conn.execute(sql, params)
                    return await cur.fetchall() if cur.description is not None else []
                except psycopg.OperationalError as exc:
                    if self._conn is not None:
                        await self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise exceptions.StoreError(f"cluster database unreachable: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def now(self) -> float:
        """The database's clock."""
        return float((await self._rows(_NOW))[0][0])

    async def register(self, host_id: str, session: str, lease: float, info: HostInfo) -> int:
        """Register ``host_id`` (incarnation + 1)."""
        params = {
            "host": host_id,
            "session": session,
            "address": info.address,
            "version": info.version,
            "config_hash": info.config_hash,
            "lease": validate_lease(lease),
        }
        return int((await self._rows(_REGISTER, params))[0][0])

    async def heartbeat(self, session: str) -> bool:
        """Renew a live host lease."""
        return bool(await self._rows(_HEARTBEAT, (session,)))

    async def resign(self, session: str) -> None:
        """End the host lease now."""
        await self._rows(_RESIGN, (session,))

    async def list_hosts(self) -> builtins.list[HostRecord]:
        """Every host, by id."""
        out = []
        for row in await self._rows(_LIST):
            host, inc, session, address, version, chash, started, beat, lease, expires, now = row
            out.append(
                HostRecord(
                    host,
                    inc,
                    session,
                    address,
                    version,
                    chash,
                    started,
                    beat,
                    lease,
                    expires,
                    alive=expires >= now,
                )
            )
        return out

    async def take_lease(
        self, name: str, holder: str, session: str, duration: float
    ) -> leases.Lease:
        """One conditional upsert (see ``_TAKE``)."""
        if not 0.0 < duration < 86400.0:
            raise exceptions.InvalidInput(
                f"lease duration must be in (0, 86400) s, got {duration!r}"
            )
        params = {"name": name, "holder": holder, "session": session, "duration": duration}
        rows = await self._rows(_TAKE, params)
        if rows:
            epoch, expires = rows[0]
            return leases.Lease(name, holder, session, int(epoch), float(expires))
        if not await self._rows(_HOST_LIVE, (session,)):
            raise exceptions.LeaseLost(f"session {session!r} has no live host lease")
        current = await self._rows(_GET, (name,))
        held = _lease(current[0]) if current else None
        raise exceptions.LeaseHeld(
            f"{name!r} is led by {held.holder if held else None!r} "
            f"(epoch {held.epoch if held else 0})"
        )

    async def release_lease(self, name: str, session: str) -> None:
        """Free ``name`` if ``session`` holds it."""
        await self._rows(_RELEASE, (name, session))

    async def check_lease(self, name: str, session: str, epoch: int) -> None:
        """One conditional read on the database's clock."""
        if await self._rows(_CHECK, (name, session, epoch)):
            return
        current = await self._rows(_GET, (name,))
        raise stale(name, epoch, _lease(current[0]) if current else None, await self.now())

    async def list_leases(self) -> builtins.list[leases.Lease]:
        """Every lease, by name."""
        return [_lease(r) for r in await self._rows(_LEASES)]

    async def claim_tasks(self, dead: str, me: str, host_id: str, incarnation: int) -> list[str]:
        """One conditional update (see ``_CLAIM``); the ids moved to ``me``."""
        params = {"me": me, "dead": dead, "host_id": host_id, "incarnation": incarnation}
        return [str(r[0]) for r in await self._rows(_CLAIM, params)]

    async def task_hosts(self) -> dict[str, int]:
        """Host incarnation -> its unfinished tasks."""
        return {str(h): int(n) for h, n in await self._rows(_TASK_HOSTS)}

    async def busy_tags(self) -> set[str]:
        """The tags of every unfinished task (see ``_BUSY_TAGS``)."""
        return {str(r[0]) for r in await self._rows(_BUSY_TAGS)}

    async def claim_legacy(self, me: str) -> list[str]:
        """Host-less rows become ``me``'s; every id ``me`` owns."""
        return sorted(str(r[0]) for r in await self._rows(_LEGACY, {"me": me}))

    async def close(self) -> None:
        """Close the connection."""
        async with self._lock:
            if self._conn is not None:
                await self._conn.close()
                self._conn = None
