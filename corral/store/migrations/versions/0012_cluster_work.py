"""Cluster work: leadership leases with a fencing epoch, and the host that runs each task.

``cluster_leases`` holds one row per led thing (a pool's maintenance); ``tasks.host`` names the
host incarnation (``host_id#incarnation``) that runs a task, so that a host recovers only its own
tasks at start and exactly one survivor takes over a dead host's (issue 11).

Revision ID: 0012_cluster_work
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_cluster_work"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create cluster_leases; add tasks.host."""
    op.create_table(
        "cluster_leases",
        sa.Column("name", sa.String(320), nullable=False),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("session", sa.String(64), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_cluster_leases"),
    )
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("host", sa.String(320), nullable=False, server_default=""))
        batch.create_index("ix_tasks_host", ["host"])


def downgrade() -> None:
    """Drop tasks.host and cluster_leases."""
    with op.batch_alter_table("tasks") as batch:
        batch.drop_index("ix_tasks_host")
        batch.drop_column("host")
    op.drop_table("cluster_leases")
