"""Tables of the cluster concept: hosts with leases, and the distributed lock table.

``cluster_hosts`` holds one row per host (its current incarnation and session, its lease);
``lock_resources``, ``lock_requests`` and ``lock_grants`` are the lock table of
:mod:`corral.locks.pg`, operated only through the PL/pgSQL functions of migration 0007 (so these
tables are used on PostgreSQL only; on SQLite they exist and stay empty).

Must stay identical to what the migrations create (``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, Integer, String, Table, Text

from corral.store.sql.schema import metadata

cluster_hosts = Table(
    "cluster_hosts",
    metadata,
    Column("host_id", String(255), primary_key=True),
    Column("incarnation", Integer, nullable=False),
    Column("session", String(64), nullable=False, unique=True),
    Column("address", String(255), nullable=False),
    Column("version", String(64), nullable=False),
    Column("config_hash", String(64), nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("lease", Float, nullable=False),
    Column("lease_expires_at", Float, nullable=False),
)

lock_resources = Table(
    "lock_resources",
    metadata,
    Column("key", String(320), primary_key=True),
    # the newest fencing token issued for the key: durable, never goes back
    Column("token", BigInteger, nullable=False),
    # arrival order of requests at the key (queue and holder order)
    Column("seq", BigInteger, nullable=False),
    Column("upgrader", String(96), nullable=True),
)

lock_requests = Table(
    "lock_requests",
    metadata,
    Column("id", String(96), primary_key=True),
    Column("session", String(64), nullable=False),
    Column("owner", String(255), nullable=False),
    # the sorted keys joined by U+001F (keys never contain control characters)
    Column("keys", Text, nullable=False),
    # one letter per key: 's' shared, 'x' exclusive
    Column("modes", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("pos", Integer, nullable=False),
    Column("wait_key", String(320), nullable=True),
    Column("seq", BigInteger, nullable=False),
    Column("since", Float, nullable=False),
    Column("upgrading", Integer, nullable=False),
    Column("upgrade_keys", Text, nullable=True),
    Column("upgrade_since", Float, nullable=True),
)
Index("ix_lock_requests_wait_key_seq", lock_requests.c.wait_key, lock_requests.c.seq)
Index("ix_lock_requests_session", lock_requests.c.session)
Index("ix_lock_requests_owner", lock_requests.c.owner)

lock_grants = Table(
    "lock_grants",
    metadata,
    Column("key", String(320), primary_key=True),
    Column("owner", String(255), primary_key=True),
    Column("request_id", String(96), nullable=False),
    Column("mode", String(1), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("since", Float, nullable=False),
    Column("seq", BigInteger, nullable=False),
)
Index("ix_lock_grants_request_id", lock_grants.c.request_id)
Index("ix_lock_grants_owner", lock_grants.c.owner)

# Leadership leases with a fencing epoch (corral.cluster.leases; migration 0012): one row per led
# thing (``pool/<name>``). ``epoch`` grows at every change of holder and never goes back.
cluster_leases = Table(
    "cluster_leases",
    metadata,
    Column("name", String(320), primary_key=True),
    Column("holder", String(255), nullable=True),
    Column("session", String(64), nullable=True),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
)
