"""Runs synchronous SQLAlchemy work in worker threads so the asyncio loop never blocks.

Each call of :meth:`SqlExecutor.run` is one unit of work ``fn(connection)`` run in one
transaction, one thread hop away. A worker takes every unit waiting when it wakes up (up to
``batch``) and commits them together: group commit. That is still all-or-nothing per unit (a
batch is a superset of each unit's transaction); if a batch fails, its units are retried one per
transaction so that only the failing one reports the error. A caller is answered only after the
commit that contains its unit, so "committed before it takes effect" holds per unit.

SQLite gets one worker (one writer, one connection) plus one reader with its own connection:
:meth:`SqlExecutor.read` units run there, each batch in one snapshot transaction (WAL lets it read
while the writer commits), so a read never queues behind writes and their commits. PostgreSQL gets
a few workers that take reads and writes alike. A worker may keep its connection for its whole
life (``keep_connections``: no pool checkout and reset per batch). This module must not know about
tables or queries.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, Engine, exc

from corral import exceptions

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Unit(Generic[T]):
    fn: Callable[[Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


_STOP = object()


def _translate(error: BaseException, dbapi: Any = None) -> BaseException:
    if isinstance(error, exceptions.CorralError):
        return error
    if dbapi is not None and isinstance(error, dbapi.Error):  # raised by a raw cursor (prepared)
        kind = (
            exceptions.Conflict
            if isinstance(error, dbapi.IntegrityError)
            else exceptions.StoreError
        )
        translated = kind(f"the store refused the write: {error}")
        translated.__cause__ = error
        return translated
    if isinstance(error, exc.IntegrityError):
        conflict = exceptions.Conflict(f"the write conflicts with stored data: {error.orig}")
        conflict.__cause__ = error
        return conflict
    if isinstance(error, exc.SQLAlchemyError):
        failed = exceptions.StoreError(f"the store failed: {error}")
        failed.__cause__ = error
        return failed
    return error


def _settle(done: list[tuple[_Unit[Any], bool, Any]]) -> None:
    for unit, ok, value in done:
        if unit.future.done():  # the caller was cancelled; the work still happened
            continue
        if ok:
            unit.future.set_result(value)
        else:
            unit.future.set_exception(value)


class _Lane:
    """One worker thread's way into the database: a connection kept for the thread's life (or
    one checked out of the pool per batch) and the transaction of each batch."""

    def __init__(self, engine: Engine, *, keep: bool, snapshot: bool) -> None:
        self._engine = engine
        self._keep = keep
        self._snapshot = snapshot
        self._conn: Connection | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A connection inside one transaction, committed when the block ends without error."""
        if not self._keep:
            with self._engine.begin() as conn:
                self._begin(conn)
                yield conn
            return
        kept = self._conn
        if kept is None or kept.closed or kept.invalidated:
            self.close()
            kept = self._conn = self._engine.connect()
        conn = kept
        with conn.begin():
            self._begin(conn)
            yield conn

    def _begin(self, conn: Connection) -> None:
        if self._snapshot:
            # pysqlite opens a transaction only before a write: without this every SELECT of a
            # read unit would see its own snapshot.
            cursor = conn.connection.cursor()
            try:
                cursor.execute("BEGIN")
            finally:
                cursor.close()

    def close(self) -> None:
        """Give the kept connection back (in the thread that used it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except exc.SQLAlchemyError as error:  # a dead connection: nothing left to give back
                log.debug("store: closing a worker connection failed: %s", error)


class SqlExecutor:
    """A bounded pool of worker threads, each with its own connection, running units of work.

    ``readers`` threads (SQLite: 1) serve :meth:`read` on connections of their own, each batch in
    one snapshot transaction; without readers, reads go to the workers like any unit.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        workers: int = 1,
        batch: int = 256,
        readers: int = 0,
        keep_connections: bool = False,
    ) -> None:
        if workers < 1 or batch < 1 or readers < 0:
            raise exceptions.InvalidInput("SqlExecutor needs at least one worker and a batch of 1")
        self.engine = engine
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._reads: queue.SimpleQueue[object] = queue.SimpleQueue() if readers else self._queue
        self._batch = batch
        self._closed = False
        sqlite = engine.dialect.name == "sqlite"
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(self._queue, _Lane(engine, keep=keep_connections, snapshot=False)),
                name=f"corral-store-{i}",
                daemon=True,
            )
            for i in range(workers)
        ]
        self._readers = [
            threading.Thread(
                target=self._work,
                args=(self._reads, _Lane(engine, keep=keep_connections, snapshot=sqlite)),
                name=f"corral-store-read-{i}",
                daemon=True,
            )
            for i in range(readers)
        ]
        for thread in self._threads + self._readers:
            thread.start()

    async def run(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in a worker, inside a transaction committed before this returns.

        Cancelling the caller does not cancel the unit: it may still be committed.
        """
        if self._closed:
            raise exceptions.StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Unit(fn, loop, future))
        return await future

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn``, which only reads, in a reader (or a worker) inside one transaction.

        It sees every unit committed before this call; it never waits for writes queued or
        committing meanwhile. ``fn`` must not write: a reader's transaction is not a writer's.
        """
        if self._closed:
            raise exceptions.StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._reads.put(_Unit(fn, loop, future))
        return await future

    def run_sync(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn`` in one transaction in the calling thread (for migrations and tools)."""
        try:
            with self.engine.begin() as conn:
                return fn(conn)
        except BaseException as error:
            raise _translate(error, self.engine.dialect.dbapi) from error

    async def close(self) -> None:
        """Finish the queued units, stop the workers and dispose of the engine."""
        if self._closed:
            return
        self._closed = True
        for _ in self._threads:
            self._queue.put(_STOP)
        for _ in self._readers:
            self._reads.put(_STOP)
        await asyncio.to_thread(self._join)

    def _join(self) -> None:
        for thread in self._threads + self._readers:
            thread.join()
        self.engine.dispose()

    def _take(self, source: queue.SimpleQueue[object]) -> tuple[list[_Unit[Any]], bool]:
        first = source.get()
        if first is _STOP:
            return [], True
        units: list[_Unit[Any]] = [first]  # type: ignore[list-item]
        stop = False
        while len(units) < self._batch:
            try:
                item = source.get_nowait()
            except queue.Empty:
                break
            if item is _STOP:
                stop = True
                break
            units.append(item)  # type: ignore[arg-type]
        return units, stop

    def _work(self, source: queue.SimpleQueue[object], lane: _Lane) -> None:
        try:
            while True:
                units, stop = self._take(source)
                if units:
                    self._run_batch(units, lane)
                if stop:
                    return
        finally:
            lane.close()

    def _run_batch(self, units: list[_Unit[Any]], lane: _Lane) -> None:
        results: list[tuple[_Unit[Any], bool, Any]] = []
        try:
            with lane.transaction() as conn:
                for unit in units:
                    results.append((unit, True, unit.fn(conn)))
        except BaseException as error:
            if len(units) == 1:
                results = [(units[0], False, _translate(error, self.engine.dialect.dbapi))]
            else:
                results = [self._run_alone(unit, lane) for unit in units]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Unit[Any], bool, Any]]] = {}
        for item in results:
            by_loop.setdefault(item[0].loop, []).append(item)
        for loop, done in by_loop.items():
            try:
                loop.call_soon_threadsafe(_settle, done)
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                log.debug("store: dropping %d answers for a closed event loop", len(done))

    def _run_alone(self, unit: _Unit[Any], lane: _Lane) -> tuple[_Unit[Any], bool, Any]:
        try:
            with lane.transaction() as conn:
                return (unit, True, unit.fn(conn))
        except BaseException as error:
            return (unit, False, _translate(error, self.engine.dialect.dbapi))
