"""Host registration and leases in ``cluster_hosts`` (PostgreSQL, the database's clock).

A host row carries its stable id, the incarnation (one more at every start), a random session
id for this incarnation, and a lease renewed by heartbeats. Registering again supersedes the
previous incarnation at once: whatever the previous session held is freed by the next reap.

Plain functions on a psycopg connection; they must not keep state or start threads.
"""

from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from corral import exceptions

if TYPE_CHECKING:  # annotations only: a SQLite 'corral serve' need not load psycopg (issue 14)
    import psycopg

_REGISTER = """
INSERT INTO cluster_hosts (host_id, incarnation, session, address, version, config_hash,
                           started_at, heartbeat_at, lease, lease_expires_at)
VALUES (%(host)s, 1, %(session)s, %(address)s, %(version)s, %(config_hash)s,
        corral_lock_now(), corral_lock_now(), %(lease)s, corral_lock_now() + %(lease)s)
ON CONFLICT (host_id) DO UPDATE SET
  incarnation = cluster_hosts.incarnation + 1, session = EXCLUDED.session,
  address = EXCLUDED.address, version = EXCLUDED.version, config_hash = EXCLUDED.config_hash,
  started_at = EXCLUDED.started_at, heartbeat_at = EXCLUDED.heartbeat_at,
  lease = EXCLUDED.lease, lease_expires_at = EXCLUDED.lease_expires_at
RETURNING incarnation
"""

_HEARTBEAT = """
UPDATE cluster_hosts SET heartbeat_at = corral_lock_now(),
  lease_expires_at = corral_lock_now() + lease
WHERE session = %s AND lease_expires_at >= corral_lock_now()
RETURNING lease_expires_at
"""

_RESIGN = "UPDATE cluster_hosts SET lease_expires_at = 0 WHERE session = %s"

_LIST = """
SELECT host_id, incarnation, session, address, version, config_hash, started_at,
       heartbeat_at, lease, lease_expires_at, corral_lock_now()
FROM cluster_hosts ORDER BY host_id
"""


def new_session() -> str:
    """A fresh random session id (16 hex digits: it also names the host's NOTIFY channel)."""
    return secrets.token_hex(8)


def default_host_id() -> str:
    """The machine's host name: the default stable host id."""
    return socket.gethostname() or "localhost"


def validate_lease(lease: object) -> float:
    """A lease in seconds: a finite float above zero."""
    if isinstance(lease, bool) or not isinstance(lease, int | float):
        raise exceptions.InvalidInput(f"lease must be seconds (a number), got {lease!r}")
    value = float(lease)
    if not 0.0 < value < 86400.0:
        raise exceptions.InvalidInput(f"lease must be above 0 and below a day, got {lease!r}")
    return value


@dataclass(frozen=True, slots=True)
class HostRecord:
    """One row of ``cluster_hosts`` as read, with whether its lease is current."""

    host_id: str
    incarnation: int
    session: str
    address: str
    version: str
    config_hash: str
    started_at: float
    heartbeat_at: float
    lease: float
    lease_expires_at: float
    alive: bool


def register(
    conn: psycopg.Connection[Any],
    host_id: str,
    session: str,
    lease: float,
    address: str = "",
    version: str = "",
    config_hash: str = "",
) -> int:
    """Register (or re-register) ``host_id`` with ``session``; return its new incarnation."""
    row = conn.execute(
        _REGISTER,
        {
            "host": host_id,
            "session": session,
            "address": address,
            "version": version,
            "config_hash": config_hash,
            "lease": lease,
        },
    ).fetchone()
    assert row is not None  # noqa: S101 - INSERT ... RETURNING always returns the row
    return int(row[0])


def heartbeat(conn: psycopg.Connection[Any], session: str) -> bool:
    """Renew the lease of ``session``; False if it had already lapsed (or was superseded)."""
    return conn.execute(_HEARTBEAT, (session,)).fetchone() is not None


def resign(conn: psycopg.Connection[Any], session: str) -> None:
    """End the lease of ``session`` now (a clean shutdown frees its locks at the next reap)."""
    conn.execute(_RESIGN, (session,))


def list_hosts(conn: psycopg.Connection[Any]) -> list[HostRecord]:
    """Every registered host, by id."""
    records = []
    for row in conn.execute(_LIST).fetchall():
        host, inc, session, address, version, config_hash, started, beat, lease, expires, now = row
        records.append(
            HostRecord(
                host,
                inc,
                session,
                address,
                version,
                config_hash,
                started,
                beat,
                lease,
                expires,
                alive=expires >= now,
            )
        )
    return records
