"""Named statements compiled once per database dialect and run through the driver directly.

Executing a Core statement costs SQLAlchemy some 40-80 µs of Python per call even with its
compiled cache; running the already-compiled SQL string with ``exec_driver_sql`` costs about a
sixth of that. The hot write paths use :class:`Prepared`; the SQL is still built with Core (no
hand-written strings) and parameters are always bound. Must not hold connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, CursorResult, Executable
from sqlalchemy.engine import Dialect


class Prepared:
    """A Core statement with a name, compiled on first use for each dialect."""

    __slots__ = ("_compiled", "name", "statement")

    def __init__(self, name: str, statement: Executable) -> None:
        self.name = name
        self.statement = statement
        # per dialect: SQL text, positional parameter order, values of the statement's constants
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _prepare(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
        key = f"{dialect.name}:{dialect.paramstyle}"
        found = self._compiled.get(key)
        if found is None:
            compiled = self.statement.compile(dialect=dialect)  # type: ignore[attr-defined]
            order = compiled.positiontup
            # literal values in the statement (``state == 'ready'``) are anonymous bound
            # parameters: their values are part of the statement
            constants = {
                name: bind.effective_value
                for name, bind in compiled.binds.items()
                if not bind.required
            }
            found = (str(compiled), tuple(order) if dialect.positional else None, constants)
            self._compiled[key] = found
        return found

    def sql(self, dialect: Dialect) -> tuple[str, tuple[str, ...] | None]:
        """The SQL text for ``dialect`` and, for positional paramstyles, the parameter order."""
        text, order, _ = self._prepare(dialect)
        return text, order

    def _args(self, conn: Connection, params: Mapping[str, Any]) -> tuple[str, Any]:
        text, order, constants = self._prepare(conn.dialect)
        values = {**constants, **params} if constants else params
        if order is None:
            return text, dict(values)
        return text, tuple(values[name] for name in order)

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> CursorResult[Any]:
        """Run the statement on ``conn`` with ``params`` bound by name."""
        text, args = self._args(conn, params)
        return conn.exec_driver_sql(text, args)

    def write(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run a write on the DB-API cursor of ``conn`` (same transaction); rows affected.

        Skips SQLAlchemy's per-call execution context (about 60 µs here): the hot write path.
        """
        text, args = self._args(conn, params)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(text, args)
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def rows(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a query (or a write with ``RETURNING``) on the DB-API cursor of ``conn``; its rows
        as tuples, in the statement's column order. The hot read path."""
        text, args = self._args(conn, params)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(text, args)
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def exists(self, conn: Connection, params: Mapping[str, Any]) -> bool:
        """Run a query on the DB-API cursor of ``conn``; whether it returned a row."""
        text, args = self._args(conn, params)
        cursor = conn.connection.cursor()
        try:
            cursor.execute(text, args)
            return cursor.fetchone() is not None
        finally:
            cursor.close()

    def __repr__(self) -> str:
        return f"Prepared({self.name!r})"
