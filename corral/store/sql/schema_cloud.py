"""Tables of the cloud backends' cluster-wide coordination: ``cloud_rate_buckets`` (one token
bucket per cloud account) and ``cloud_quota_usage`` (the VMs counted against each quota).

Only a PostgreSQL store uses them (:mod:`corral.backends.cloud.shared`); they exist in every SQL
store so that one schema serves all. Must stay identical to what the migrations create
(``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Integer, String, Table

from corral.store.sql.schema import metadata

cloud_rate_buckets = Table(
    "cloud_rate_buckets",
    metadata,
    Column("account", String(512), primary_key=True),
    Column("next_at", Float, nullable=False),
    Column("paused_until", Float, nullable=False),
)
"""Per account: when the bucket is empty again (epoch seconds of the database's clock), and
until when a throttling answer holds every host back."""

cloud_quota_usage = Table(
    "cloud_quota_usage",
    metadata,
    Column("scope_key", String(512), primary_key=True),
    Column("vm", String(512), primary_key=True),
    Column("instances", Integer, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mib", Integer, nullable=False),
)
"""Per quota (a pool's or an account's key): each VM counted against it, and its size."""
