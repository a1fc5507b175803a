"""Alembic environment for corral: runs on the connection :mod:`corral.store.migrate` passes in.

Only online migrations on a given connection are supported; no logging configuration is read.
"""

from __future__ import annotations

from alembic import context

from corral.store.sql.schema import load_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("corral migrations run through corral.store.migrate, with a connection")

context.configure(
    connection=connection,
    target_metadata=load_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
