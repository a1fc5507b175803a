"""Ticket metadata: a JSON column on tickets, and one searchable row per pair.

Revision ID: 0006
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add tickets.meta and the ticket_meta table."""
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("meta", sa.Text(), nullable=True))
    op.create_table(
        "ticket_meta",
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.PrimaryKeyConstraint("ticket_id", "key", name="pk_ticket_meta"),
    )
    op.create_index("ix_ticket_meta_key_value", "ticket_meta", ["key", "value"])


def downgrade() -> None:
    """Drop the ticket_meta table and tickets.meta."""
    op.drop_index("ix_ticket_meta_key_value", table_name="ticket_meta")
    op.drop_table("ticket_meta")
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("meta")
