"""Command logs: what each backend command printed for a VM (stdout, stderr, exit status).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the command_logs table."""
    op.create_table(
        "command_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("vm", sa.String(255), nullable=False),
        sa.Column("pool", sa.String(255), nullable=False),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("argv", sa.Text(), nullable=False),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.Column("duration", sa.Float(), nullable=False),
        sa.Column("stdout", sa.Text(), nullable=False),
        sa.Column("stderr", sa.Text(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_command_logs"),
    )
    op.create_index("ix_command_logs_vm_id", "command_logs", ["vm", "id"])
    op.create_index("ix_command_logs_at", "command_logs", ["at"])


def downgrade() -> None:
    """Drop the command_logs table."""
    op.drop_index("ix_command_logs_at", table_name="command_logs")
    op.drop_index("ix_command_logs_vm_id", table_name="command_logs")
    op.drop_table("command_logs")
