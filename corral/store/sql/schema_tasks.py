"""Tables of the tasks concept: ``tasks`` and ``task_recoveries``.

Must stay identical to what the migrations create (``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import Column, Float, ForeignKey, Index, Integer, String, Table, Text

from corral.store.sql.schema import metadata

tasks = Table(
    "tasks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("verb", String(255), nullable=False),
    Column("tag", String(255), nullable=False),
    Column("priority", String(16), nullable=False),
    Column("recovery", String(16), nullable=False),
    Column("persist", String(16), nullable=False),
    Column("clean", String(16), nullable=False),
    Column("locks", Text, nullable=False),
    Column("jobs", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", String(16), nullable=False),
    Column("jobs_done", Integer, nullable=False),
    Column("code", String(64), nullable=False),
    Column("message", Text, nullable=False),
    Column("result", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
    # the host (``host_id#incarnation``) that runs the task; '' on a single-host store
    # (migration 0012; see corral.controller.takeover)
    Column("host", String(320), nullable=False, server_default=""),
)
Index("ix_tasks_state", tasks.c.state)
Index("ix_tasks_host", tasks.c.host)
Index("ix_tasks_tag", tasks.c.tag)

task_recoveries = Table(
    "task_recoveries",
    metadata,
    Column(
        "task_id",
        String(64),
        ForeignKey("tasks.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("position", Integer, primary_key=True),
    Column("name", String(255), nullable=False),
    Column("args", Text, nullable=False),
)
