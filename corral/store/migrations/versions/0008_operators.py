"""Operators' controls: VM holds, pool modes (paused, draining) and the audit trail.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add vms.hold_until, pools.mode and the audit table."""
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("hold_until", sa.Float(), nullable=True))
    with op.batch_alter_table("pools") as batch:
        batch.add_column(sa.Column("mode", sa.String(16), nullable=True))
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit"),
    )
    op.create_index("ix_audit_kind_target", "audit", ["kind", "target"])


def downgrade() -> None:
    """Drop the audit table, pools.mode and vms.hold_until."""
    op.drop_index("ix_audit_kind_target", table_name="audit")
    op.drop_table("audit")
    with op.batch_alter_table("pools") as batch:
        batch.drop_column("mode")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("hold_until")
