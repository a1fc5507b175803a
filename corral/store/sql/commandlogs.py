"""Command logs in SQL (see :mod:`corral.store.commandlogs` for the contract).

Must not be imported by code that is not a store.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, Row, delete, insert, select

from corral.store.commandlogs import MAX_LIST, CommandLog
from corral.store.sql.executor import SqlExecutor
from corral.store.sql.schema_commandlogs import command_logs as table


def add_log(conn: Connection, log: CommandLog) -> int:
    """Insert one (capped) record; its id."""
    capped = log.capped()
    result = conn.execute(
        insert(table)
        .values(
            vm=capped.vm,
            pool=capped.pool,
            command=capped.command,
            argv=json.dumps(list(capped.argv)),
            exit_status=capped.exit_status,
            duration=capped.duration,
            stdout=capped.stdout.replace("\x00", "\ufffd"),  # PostgreSQL text cannot hold NUL
            stderr=capped.stderr.replace("\x00", "\ufffd"),
            at=capped.at,
        )
        .returning(table.c.id)
    )
    return int(result.scalar_one())


def _record(row: Row[tuple[object, ...]]) -> CommandLog:
    m = row._mapping
    return CommandLog(
        id=int(m["id"]),
        vm=str(m["vm"]),
        pool=str(m["pool"]),
        command=str(m["command"]),
        argv=tuple(json.loads(str(m["argv"]))),
        exit_status=None if m["exit_status"] is None else int(m["exit_status"]),
        duration=float(m["duration"]),
        stdout=str(m["stdout"]),
        stderr=str(m["stderr"]),
        at=float(m["at"]),
    )


def logs_for_vm(conn: Connection, vm: str, after: int, limit: int) -> list[CommandLog]:
    """The records of ``vm`` with an id above ``after``, oldest first."""
    query = (
        select(table)
        .where((table.c.vm == vm) & (table.c.id > after))
        .order_by(table.c.id)
        .limit(max(0, min(limit, MAX_LIST)))
    )
    return [_record(row) for row in conn.execute(query)]


def purge_logs(conn: Connection, before: float) -> int:
    """Delete the records made before ``before``."""
    return conn.execute(delete(table).where(table.c.at < before)).rowcount


class SqlCommandLogsRepository:
    """Command logs in the ``command_logs`` table."""

    def __init__(self, executor: SqlExecutor) -> None:
        self._executor = executor

    async def add(self, log: CommandLog) -> int:
        """See :meth:`corral.store.commandlogs.CommandLogsRepository.add`."""
        return await self._executor.run(lambda conn: add_log(conn, log))

    async def for_vm(self, vm: str, *, after: int = 0, limit: int = 100) -> list[CommandLog]:
        """See :meth:`corral.store.commandlogs.CommandLogsRepository.for_vm`."""
        return await self._executor.read(lambda conn: logs_for_vm(conn, vm, after, limit))

    async def purge(self, before: float) -> int:
        """See :meth:`corral.store.commandlogs.CommandLogsRepository.purge`."""
        return await self._executor.run(lambda conn: purge_logs(conn, before))
