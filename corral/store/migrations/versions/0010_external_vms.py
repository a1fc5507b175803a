"""External VMs: ``vms.external`` marks a machine made elsewhere (``corral vm add``) or being
forgotten (``corral vm forget``): its retirement forgets it and never calls the backend.

Revision ID: 0010_external_vms
Revises: 0012_cluster_work
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_external_vms"
down_revision = "0012_cluster_work"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add vms.external (false for every VM recorded so far: corral spawned them)."""
    with op.batch_alter_table("vms") as batch:
        batch.add_column(
            sa.Column("external", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    """Drop vms.external."""
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("external")
