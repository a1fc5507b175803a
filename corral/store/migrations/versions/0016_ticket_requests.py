"""List tickets (issue 15): ``tickets.requests``, the JSON list of a ticket's pool/tag entries.

Revision ID: 0016_ticket_requests
Revises: 0011_shared_vms
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016_ticket_requests"
down_revision = "0011_shared_vms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the column (NULL: a ticket of one pool or tag set, as every existing one)."""
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(sa.Column("requests", sa.Text(), nullable=True))


def downgrade() -> None:
    """Drop the column."""
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("requests")
