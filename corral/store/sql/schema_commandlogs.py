"""Tables of the command logs concept: ``command_logs``.

Must stay identical to what the migrations create (``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, String, Table, Text

from corral.store.sql.schema import metadata

command_logs = Table(
    "command_logs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("vm", String(255), nullable=False),
    Column("pool", String(255), nullable=False),
    Column("command", String(32), nullable=False),
    Column("argv", Text, nullable=False),
    Column("exit_status", Integer, nullable=True),
    Column("duration", Float, nullable=False),
    Column("stdout", Text, nullable=False),
    Column("stderr", Text, nullable=False),
    Column("at", Float, nullable=False),
)
Index("ix_command_logs_vm_id", command_logs.c.vm, command_logs.c.id)
Index("ix_command_logs_at", command_logs.c.at)
