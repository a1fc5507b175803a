"""Pools: pool counters, VMs, tickets, per-pool info, statistics samples and counters.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the pools tables."""
    op.create_table(
        "pools",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_pools"),
    )
    op.create_table(
        "vms",
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("state_since", sa.Float(), nullable=False),
        sa.Column("id_in_pool", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(255), nullable=True),
        sa.Column("handle", sa.Text(), nullable=True),
        sa.Column("ticket", sa.String(64), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("sandbox", sa.String(255), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("ready_at", sa.Float(), nullable=True),
        sa.Column("last_used_at", sa.Float(), nullable=True),
        sa.Column("livecheck_failures", sa.Integer(), nullable=False),
        sa.Column("last_livecheck_at", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_vms"),
    )
    op.create_index(
        "ix_vms_pool_state_sandbox_ready_at", "vms", ["pool", "state", "sandbox", "ready_at"]
    )
    op.create_index("ix_vms_ticket", "vms", ["ticket"])
    op.create_index("ix_vms_address", "vms", ["address"])
    op.create_index("ix_vms_state", "vms", ["state"])
    op.create_table(
        "tickets",
        sa.Column("seq", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=True),
        sa.Column("pool", sa.String(64), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("sandbox", sa.String(255), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("ttl", sa.Float(), nullable=True),
        sa.Column("vm", sa.String(128), nullable=True),
        sa.Column("assigned_at", sa.Float(), nullable=True),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_tickets"),
        sa.UniqueConstraint("id", name="uq_tickets_id"),
    )
    op.create_index("ix_tickets_state", "tickets", ["state"])
    op.create_index("ix_tickets_owner", "tickets", ["owner"])
    op.create_table(
        "pool_info",
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("key", sa.String(255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("pool", "key", name="pk_pool_info"),
    )
    op.create_table(
        "pool_samples",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_pool_samples"),
    )
    op.create_index("ix_pool_samples_pool_kind_id", "pool_samples", ["pool", "kind", "id"])
    op.create_table(
        "pool_counters",
        sa.Column("pool", sa.String(64), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("pool", "name", name="pk_pool_counters"),
    )


def downgrade() -> None:
    """Drop the pools tables."""
    op.drop_table("pool_counters")
    op.drop_index("ix_pool_samples_pool_kind_id", table_name="pool_samples")
    op.drop_table("pool_samples")
    op.drop_table("pool_info")
    op.drop_index("ix_tickets_owner", table_name="tickets")
    op.drop_index("ix_tickets_state", table_name="tickets")
    op.drop_table("tickets")
    op.drop_index("ix_vms_state", table_name="vms")
    op.drop_index("ix_vms_address", table_name="vms")
    op.drop_index("ix_vms_ticket", table_name="vms")
    op.drop_index("ix_vms_pool_state_sandbox_ready_at", table_name="vms")
    op.drop_table("vms")
    op.drop_table("pools")
