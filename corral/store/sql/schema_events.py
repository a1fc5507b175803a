"""The cluster-wide event log (issue 12): ``cluster_events``, one row per event of the stream.

Every host of a cluster appends the events its controller publishes here, and every host's
event hub tails the table, so all hosts stream the same events under the same ids
(:mod:`corral.cluster.eventlog`). Only a PostgreSQL store with cluster hosts uses it; it exists
in every SQL store so that one schema serves all. Must stay identical to what the migrations
create (``tests/store/test_migrations.py`` checks).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, String, Table, Text

from corral.store.sql.schema import metadata

cluster_events = Table(
    "cluster_events",
    metadata,
    # ids from the table's one sequence; appenders are serialised so that they commit in id order
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("at", Float, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("owner", Text, nullable=True),
    Column("payload", Text, nullable=False),
    Column("origin", String(96), nullable=False),
)
"""One event: when it was appended (the appender's wall clock), its kind, the owner of its
ticket (who may see it), its JSON payload as sent, and the append batch it came in
(``<session>/<n>``: a batch retried after a lost connection is not appended twice)."""
