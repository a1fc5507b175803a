"""Idempotency keys in SQL (see :mod:`corral.store.keys` for the contract).

A claim is one transaction: drop the key if it expired, insert it unless present
(``ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL alike), read the winner. Two hosts claiming
one key at once both read the same winner. Must not be imported by code that is not a store.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from corral.store.sql.executor import SqlExecutor
from corral.store.sql.schema_keys import ticket_keys as keys_table


def claim_key(
    conn: Connection, owner: str, key: str, ticket_id: str, now: float, expires_at: float
) -> str:
    """Map the key to ``ticket_id`` unless it maps to a live ticket; the ticket it maps to."""
    mine = (keys_table.c.owner == owner) & (keys_table.c.key == key)
    conn.execute(delete(keys_table).where(mine & (keys_table.c.expires_at <= now)))
    values = {"owner": owner, "key": key, "ticket_id": ticket_id, "expires_at": expires_at}
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    conn.execute(dialect.insert(keys_table).values(**values).on_conflict_do_nothing())
    winner = conn.execute(select(keys_table.c.ticket_id).where(mine)).scalar_one()
    return str(winner)


def get_key(conn: Connection, owner: str, key: str, now: float) -> str | None:
    """The ticket of an unexpired key."""
    query = select(keys_table.c.ticket_id).where(
        (keys_table.c.owner == owner) & (keys_table.c.key == key) & (keys_table.c.expires_at > now)
    )
    found = conn.execute(query).scalar_one_or_none()
    return None if found is None else str(found)


def purge_keys(conn: Connection, now: float) -> int:
    """Delete the keys expired at ``now``."""
    return conn.execute(delete(keys_table).where(keys_table.c.expires_at <= now)).rowcount


class SqlKeysRepository:
    """Idempotency keys in the ``ticket_keys`` table."""

    def __init__(self, executor: SqlExecutor) -> None:
        self._executor = executor

    async def claim(
        self, owner: str, key: str, ticket_id: str, *, now: float, expires_at: float
    ) -> str:
        """See :meth:`corral.store.keys.KeysRepository.claim`."""
        return await self._executor.run(
            lambda conn: claim_key(conn, owner, key, ticket_id, now, expires_at)
        )

    async def get(self, owner: str, key: str, now: float) -> str | None:
        """See :meth:`corral.store.keys.KeysRepository.get`."""
        return await self._executor.read(lambda conn: get_key(conn, owner, key, now))

    async def purge(self, now: float) -> int:
        """See :meth:`corral.store.keys.KeysRepository.purge`."""
        return await self._executor.run(lambda conn: purge_keys(conn, now))
