"""Idempotency keys: which ticket a client's Idempotency-Key created.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the ticket_keys table."""
    op.create_table(
        "ticket_keys",
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("ticket_id", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("owner", "key", name="pk_ticket_keys"),
    )
    op.create_index("ix_ticket_keys_expires_at", "ticket_keys", ["expires_at"])


def downgrade() -> None:
    """Drop the ticket_keys table."""
    op.drop_index("ix_ticket_keys_expires_at", table_name="ticket_keys")
    op.drop_table("ticket_keys")
