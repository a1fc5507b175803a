"""Tables of the pools concept: ``pools``, ``vms``, ``tickets``, ``pool_info``, ``pool_samples``,
``pool_counters``.

Must stay identical to what the migrations create (``0002``; ``0010``: ``vms.external``);
``tests/store/test_migrations.py`` checks.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Float, Index, Integer, String, Table, Text, false

from corral.store.sql.schema import metadata

pools = Table(
    "pools",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("next_seq", Integer, nullable=False),
    Column("mode", String(16), nullable=True),
)

vms = Table(
    "vms",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("pool", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state_since", Float, nullable=False),
    Column("id_in_pool", Integer, nullable=False),
    Column("address", String(255), nullable=True),
    Column("handle", Text, nullable=True),
    Column("ticket", String(64), nullable=True),
    Column("owner", String(255), nullable=True),
    Column("sandbox", String(255), nullable=True),
    Column("uses", Integer, nullable=False),
    Column("ready_at", Float, nullable=True),
    Column("last_used_at", Float, nullable=True),
    Column("livecheck_failures", Integer, nullable=False),
    Column("last_livecheck_at", Float, nullable=True),
    Column("reason", Text, nullable=True),
    Column("hold_until", Float, nullable=True),
    Column("external", Boolean, nullable=False, server_default=false()),
    # shared VMs (migration 0011): how many tickets hold it, whether one holds it exclusively,
    # and their ids space-separated (``ticket`` is the first)
    Column("load", Integer, nullable=False, server_default="0"),
    Column("exclusive", Boolean, nullable=False, server_default=false()),
    Column("tickets", Text, nullable=False, server_default=""),
)
Index("ix_vms_pool_state_sandbox_ready_at", vms.c.pool, vms.c.state, vms.c.sandbox, vms.c.ready_at)
Index("ix_vms_ticket", vms.c.ticket)
Index("ix_vms_address", vms.c.address)
Index("ix_vms_state", vms.c.state)

tickets = Table(
    "tickets",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("owner", String(255), nullable=False),
    Column("state", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True),
    Column("pool", String(64), nullable=True),
    Column("tags", Text, nullable=False),
    Column("sandbox", String(255), nullable=True),
    Column("priority", Integer, nullable=False),
    Column("ttl", Float, nullable=True),
    Column("vm", String(128), nullable=True),
    Column("assigned_at", Float, nullable=True),
    Column("closed_at", Float, nullable=True),
    Column("reason", Text, nullable=True),
    Column("meta", Text, nullable=True),
    # exclusive and multi-machine tickets (migration 0011); ``vms``: JSON list when several
    Column("exclusive", Boolean, nullable=False, server_default=false()),
    Column("machines", Integer, nullable=False, server_default="1"),
    Column("vms", Text, nullable=True),
    # list tickets (migration 0016): JSON list of {"pool", "tags", "count"}; NULL otherwise
    Column("requests", Text, nullable=True),
)
Index("ix_tickets_state", tickets.c.state)
Index("ix_tickets_owner", tickets.c.owner)

ticket_meta = Table(
    "ticket_meta",
    metadata,
    Column("ticket_id", String(64), primary_key=True),
    Column("key", String(64), primary_key=True),
    Column("value", String(256), nullable=False),
)
"""One row per metadata pair of a ticket, for searching tickets by their metadata."""
Index("ix_ticket_meta_key_value", ticket_meta.c.key, ticket_meta.c.value)

audit = Table(
    "audit",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False),
    Column("actor", String(255), nullable=False),
    Column("action", String(64), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("target", String(255), nullable=False),
    Column("detail", Text, nullable=True),
)
"""Who did what to which VM or pool, and when (operators' actions)."""
Index("ix_audit_kind_target", audit.c.kind, audit.c.target)

pool_info = Table(
    "pool_info",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

pool_samples = Table(
    "pool_samples",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pool", String(64), nullable=False),
    Column("kind", String(32), nullable=False),
    Column("value", Float, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_pool_samples_pool_kind_id", pool_samples.c.pool, pool_samples.c.kind, pool_samples.c.id)

pool_counters = Table(
    "pool_counters",
    metadata,
    Column("pool", String(64), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
)
