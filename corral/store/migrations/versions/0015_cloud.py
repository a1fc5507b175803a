"""Cloud backends: cluster-wide rate buckets and quota usage (issue 13).

Revision ID: 0015_cloud
Revises: 0010_external_vms
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_cloud"
down_revision = "0010_external_vms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create cloud_rate_buckets and cloud_quota_usage."""
    op.create_table(
        "cloud_rate_buckets",
        sa.Column("account", sa.String(512), nullable=False),
        sa.Column("next_at", sa.Float(), nullable=False),
        sa.Column("paused_until", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account", name="pk_cloud_rate_buckets"),
    )
    op.create_table(
        "cloud_quota_usage",
        sa.Column("scope_key", sa.String(512), nullable=False),
        sa.Column("vm", sa.String(512), nullable=False),
        sa.Column("instances", sa.Integer(), nullable=False),
        sa.Column("vcpus", sa.Integer(), nullable=False),
        sa.Column("memory_mib", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope_key", "vm", name="pk_cloud_quota_usage"),
    )


def downgrade() -> None:
    """Drop both tables."""
    op.drop_table("cloud_quota_usage")
    op.drop_table("cloud_rate_buckets")
