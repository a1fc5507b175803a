"""Tables of the idempotency keys concept: ``ticket_keys``.

Must stay identical to what the migrations create (``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, String, Table

from corral.store.sql.schema import metadata

ticket_keys = Table(
    "ticket_keys",
    metadata,
    Column("owner", String(255), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("ticket_id", String(64), nullable=False),
    Column("expires_at", Float, nullable=False),
)
Index("ix_ticket_keys_expires_at", ticket_keys.c.expires_at)
