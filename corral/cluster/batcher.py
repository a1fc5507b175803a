"""A thread that runs SQL commands in submission order, several per transaction.

Commands queue up while a transaction is in flight; the next transaction takes all of them (up
to a bound) in one pipelined round trip and one commit, so contenders share commits. Every
command must be idempotent: after a lost connection the batch is run again on a new one.

This module knows nothing of locks; it must not call user code except the ``done`` callbacks,
which must not block.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

log = logging.getLogger(__name__)

Done = Callable[[Any, BaseException | None], None]

_BATCH = 64
_RETRY_FOR = 60.0


class Command:
    """One SQL statement with bound parameters; ``rows`` asks for every row, else the first
    column of the first row. ``done(result, error)`` is called from the batcher's thread."""

    __slots__ = ("done", "params", "rows", "sql")

    def __init__(
        self, sql: str, params: tuple[Any, ...], done: Done | None = None, rows: bool = False
    ) -> None:
        self.sql = sql
        self.params = params
        self.done = done
        self.rows = rows


class Batcher(threading.Thread):
    """Runs :class:`Command` objects in order on its own connection (autocommit)."""

    def __init__(self, url: str, name: str = "corral-sql") -> None:
        super().__init__(name=name, daemon=True)
        self._url = url
        self._queue: queue.SimpleQueue[Command | None] = queue.SimpleQueue()
        self._conn: psycopg.Connection[Any] | None = None
        self.reconnects = 0
        self.transactions = 0

    def submit(self, command: Command) -> None:
        """Queue ``command``; it runs after every command submitted before it."""
        self._queue.put(command)

    def call(self, sql: str, params: tuple[Any, ...], rows: bool = False) -> Any:
        """Run one command and wait for its result (blocking; for short, rare queries)."""
        box: list[Any] = []
        ready = threading.Event()

        def done(result: Any, error: BaseException | None) -> None:
            box.append((result, error))
            ready.set()

        self.submit(Command(sql, params, done, rows))
        if not ready.wait(_RETRY_FOR + 5.0):
            raise TimeoutError("the SQL batcher did not answer")
        result, error = box[0]
        if error is not None:
            raise error
        return result

    def stop(self) -> None:
        """Finish the commands queued so far, then end the thread."""
        self._queue.put(None)

    def backend_pid(self) -> int | None:
        """The server process id of the current connection (``None`` between connections)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def run(self) -> None:
        get = self._queue.get
        get_nowait = self._queue.get_nowait
        try:
            while True:
                first = get()
                if first is None:
                    return
                batch = [first]
                stopping = False
                while len(batch) < _BATCH:
                    try:
                        nxt = get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
                self._execute(batch)
                if stopping:
                    return
        finally:
            if self._conn is not None:
                self._conn.close()

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed:
            conn = self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=10)
        return conn

    def _execute(self, batch: list[Command]) -> None:
        deadline = time.monotonic() + _RETRY_FOR
        delay = 0.01
        while True:
            try:
                results = self._run(self._connection(), batch)
                break
            except psycopg.OperationalError as exc:
                # The connection (or the server) went away: every command is idempotent, so
                # the batch runs again on a new connection until the deadline.
                log.warning("SQL connection lost (%s); reconnecting", exc)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                self.reconnects += 1
                if time.monotonic() > deadline:
                    self._fail(batch, exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            except psycopg.Error as exc:
                self._fail(batch, exc)
                return
        self.transactions += 1
        for command, result in zip(batch, results, strict=True):
            if command.done is not None:
                command.done(result, None)

    @staticmethod
    def _fail(batch: list[Command], exc: BaseException) -> None:
        for command in batch:
            if command.done is not None:
                command.done(None, exc)
            else:
                log.error("SQL command failed: %s: %s", command.sql, exc)

    @staticmethod
    def _run(conn: psycopg.Connection[Any], batch: list[Command]) -> list[Any]:
        if len(batch) == 1:
            command = batch[0]
            cur = conn.execute(command.sql, command.params)
            return [_result(cur, command)]
        with conn.pipeline():
            conn.execute("BEGIN")
            cursors = [conn.execute(c.sql, c.params) for c in batch]
            conn.execute("COMMIT")
        return [_result(cur, c) for cur, c in zip(cursors, batch, strict=True)]


def _result(cur: psycopg.Cursor[Any], command: Command) -> Any:
    if cur.description is None:
        return None  # a statement without rows (UPDATE)
    if command.rows:
        return cur.fetchall()
    row = cur.fetchone()
    return None if row is None else row[0]
