"""Shared VMs and multi-machine tickets: ``vms.load``, ``vms.exclusive``, ``vms.tickets``,
``tickets.exclusive``, ``tickets.machines``, ``tickets.vms``.

Revision ID: 0011_shared_vms
Revises: 0015_cloud
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_shared_vms"
down_revision = "0015_cloud"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the columns; a VM holding a ticket now counts it (load 1, its ticket listed)."""
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("load", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("exclusive", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("tickets", sa.Text(), nullable=False, server_default=""))
    with op.batch_alter_table("tickets") as batch:
        batch.add_column(
            sa.Column("exclusive", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("machines", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("vms", sa.Text(), nullable=True))
    vms = sa.table(
        "vms",
        sa.column("ticket", sa.String()),
        sa.column("load", sa.Integer()),
        sa.column("tickets", sa.Text()),
    )
    op.execute(vms.update().where(vms.c.ticket.is_not(None)).values(load=1, tickets=vms.c.ticket))


def downgrade() -> None:
    """Drop the columns."""
    with op.batch_alter_table("tickets") as batch:
        batch.drop_column("vms")
        batch.drop_column("machines")
        batch.drop_column("exclusive")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("tickets")
        batch.drop_column("exclusive")
        batch.drop_column("load")
