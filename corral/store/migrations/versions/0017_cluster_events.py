"""The cluster-wide event log: ``cluster_events`` (issue 12).

Revision ID: 0017_cluster_events
Revises: 0016_ticket_requests
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017_cluster_events"
down_revision = "0016_ticket_requests"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create cluster_events."""
    op.create_table(
        "cluster_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("owner", sa.Text(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("origin", sa.String(96), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_cluster_events"),
    )


def downgrade() -> None:
    """Drop cluster_events."""
    op.drop_table("cluster_events")
