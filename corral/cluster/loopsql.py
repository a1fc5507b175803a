"""SQL commands run in submission order on the event loop, several per transaction.

The event-loop twin of :class:`corral.cluster.batcher.Batcher`, without its thread: commands
submitted during one turn of the loop (a release and the acquire after it, many tasks' calls)
leave together as one simple-query message, which PostgreSQL runs as one implicit transaction
with one commit, and its answer is read by a reader callback of the loop. No thread hand-over
sits between a caller and its answer, so a lone client waits one round trip per batch.

Parameters are sent as literals escaped by libpq (``PQescapeLiteral``); values come back as
text (``str`` or ``None``): callers convert. Every command must be idempotent: after a lost
connection the batch is sent again on a new one, with backoff, until :data:`RETRY_FOR`
seconds have passed; then its commands fail with the connection's error. An error of one
command rolls the whole batch back and fails every command of it.

:meth:`LoopBatcher.call` is the blocking form for short, rare queries: on the loop's thread it
first finishes the batch in flight and everything queued before it (reading the socket
directly), so it sees what was submitted before it, as the thread's queue order did.

This module knows nothing of locks; it calls no user code except the ``done`` callbacks (on
the loop's thread), which must not block.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import re
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import pq

from corral.cluster.batcher import Command

log = logging.getLogger(__name__)

BATCH = 64
RETRY_FOR = 60.0
_CONNECT_TIMEOUT = 10
_CHANNEL = re.compile(r"[a-z0-9_]{1,63}")


def _split(sql: str) -> list[str]:
    """``sql``'s text around its ``%s`` placeholders (``%%`` is a literal ``%``)."""
    if "%%s" in sql:
        raise ValueError(f"ambiguous placeholder in {sql!r}")
    return [part.replace("%%", "%") for part in sql.split("%s")]


class LoopBatcher:
    """Runs :class:`~corral.cluster.batcher.Command` objects in order on one connection driven
    by the running event loop. ``start()`` and ``aclose()`` on that loop; ``submit()`` and
    ``call()`` from its thread (``call()`` also from another thread)."""

    def __init__(self, url: str, name: str = "corral-sql") -> None:
        self.name = name
        self._url = url
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any] | None = None
        self._fd = -1
        self._queue: collections.deque[Command] = collections.deque()
        self._sent: list[Command] | None = None
        self._results: list[pq.abc.PGresult] = []
        self._kicked = False
        self._recovering: asyncio.Task[None] | None = None
        self._down_since: float | None = None
        self._closing = False
        self._drained: asyncio.Future[None] | None = None
        self._parts: dict[str, list[str]] = {}
        self._channel: str | None = None
        self._notes: list[str] = []
        self._connects = 0
        self.on_notify: Callable[[str], None] | None = None
        self.on_reconnect: Callable[[], None] | None = None
        self.reconnects = 0
        self.transactions = 0

    # --- life ---------------------------------------------------------------------------------

    async def start(self) -> LoopBatcher:
        """Connect (raises ``psycopg.OperationalError`` if the server cannot be reached)."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._adopt(
            await psycopg.AsyncConnection.connect(
                self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
            )
        )
        return self

    async def aclose(self, timeout: float = RETRY_FOR + 10.0) -> None:
        """Run what was submitted so far, then close the connection."""
        self._closing = True
        if self._queue or self._sent is not None:
            loop = asyncio.get_running_loop()
            self._drained = loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                log.warning("%s: closing with %d commands unanswered", self.name, len(self._queue))
        if self._recovering is not None:
            self._recovering.cancel()
        self._drop()

    def backend_pid(self) -> int | None:
        """The server process id of the current connection (``None`` between connections)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    # --- submitting ---------------------------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Queue ``command`` (on the loop's thread); it runs after every command before it."""
        self._queue.append(command)
        if not self._kicked and self._sent is None and self._loop is not None:
            self._kicked = True
            self._loop.call_soon(self._kick)

    def call(self, sql: str, params: tuple[Any, ...], rows: bool = False) -> Any:
        """Run one command after everything submitted before it and return its result
        (blocking; for short, rare queries)."""
        box: list[tuple[Any, BaseException | None]] = []
        ready = threading.Event()

        def done(result: Any, error: BaseException | None) -> None:
            box.append((result, error))
            ready.set()

        command = Command(sql, params, done, rows)
        loop = self._loop
        if loop is None:
            raise RuntimeError(f"{self.name} is not started")
        if threading.get_ident() == self._thread:
            self._queue.append(command)
            self._finish_blocking()
        else:
            loop.call_soon_threadsafe(self.submit, command)
            if not ready.wait(RETRY_FOR + 5.0):
                raise TimeoutError(f"{self.name} did not answer")
        result, error = box[0]
        if error is not None:
            raise error
        return result

    @property
    def channel(self) -> str | None:
        """The channel this batcher LISTENs on (``None`` before :meth:`listen`)."""
        return self._channel

    def listen(
        self, channel: str, done: Callable[[Any, BaseException | None], None] | None = None
    ) -> None:
        """LISTEN on ``channel`` (instead of the previous one), queued like any command and
        issued again first on every new connection; its payloads go to ``on_notify`` on the
        loop. A NOTIFY sent while the connection was down is lost: ``on_reconnect`` runs once
        the LISTEN is queued on a new connection, for the caller to re-read its state."""
        if not _CHANNEL.fullmatch(channel):
            raise ValueError(f"channel must be 1-63 of [a-z0-9_], got {channel!r}")
        old, self._channel = self._channel, channel
        if old is not None and old != channel:
            self.submit(Command(f"UNLISTEN {old}", ()))
        self.submit(Command(f"LISTEN {channel}", (), done))

    # --- the connection -----------------------------------------------------------------------

    def _adopt(self, conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> None:
        conn.pgconn.nonblocking = 1
        self._conn = conn
        self._fd = conn.pgconn.socket
        self._down_since = None
        assert self._loop is not None  # noqa: S101 - set by start()
        # registered for the connection's life: answers, notifications, the connection's end
        self._loop.add_reader(self._fd, self._readable)
        self._connects += 1
        if self._connects > 1 and self._channel is not None:
            # before the batch that was in flight: no grant of it may be notified unheard
            self._queue.appendleft(Command(f"LISTEN {self._channel}", ()))
            if self.on_reconnect is not None:
                self._loop.call_soon(self.on_reconnect)

    def _drop(self) -> None:
        conn, fd = self._conn, self._fd
        self._conn, self._fd = None, -1
        if fd >= 0 and self._loop is not None:
            self._loop.remove_reader(fd)
        if conn is not None:
            conn.pgconn.finish()

    def _lost(self, exc: BaseException) -> None:
        """The connection failed while ``_sent`` was in flight: queue it again, reconnect."""
        log.warning("%s: SQL connection lost (%s); reconnecting", self.name, exc)
        self.reconnects += 1
        if self._down_since is None:
            self._down_since = time.monotonic()
        sent, self._sent, self._results = self._sent, None, []
        if sent:
            self._queue.extendleft(reversed(sent))
        self._drop()
        if time.monotonic() - self._down_since > RETRY_FOR:
            self._fail_queue(exc)
            self._down_since = None
            return
        if self._recovering is None and self._loop is not None:
            self._recovering = self._loop.create_task(self._recover())

    async def _recover(self) -> None:
        delay = 0.01
        try:
            while self._conn is None:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                if self._conn is not None:
                    break  # a blocking call() connected meanwhile
                try:
                    conn = await psycopg.AsyncConnection.connect(
                        self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
                    )
                except psycopg.OperationalError as exc:
                    since = self._down_since if self._down_since is not None else time.monotonic()
                    if time.monotonic() - since > RETRY_FOR:
                        self._fail_queue(exc)
                        self._down_since = None
                    continue
                if self._conn is None:
                    self._adopt(conn)
                else:
                    await conn.close()
        finally:
            self._recovering = None
        self._kick()

    def _fail_queue(self, exc: BaseException) -> None:
        batch = list(self._queue)
        self._queue.clear()
        _deliver_error(batch, exc)
        self._check_drained()

    # --- sending and reading ------------------------------------------------------------------

    def _kick(self) -> None:
        self._kicked = False
        if self._sent is not None or not self._queue:
            self._check_drained()
            return
        if self._conn is None:
            if self._recovering is None and self._loop is not None:
                self._recovering = self._loop.create_task(self._recover())
            return
        batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        try:
            self._send(batch)
        except psycopg.OperationalError as exc:
            self._lost(exc)
            return
        except Exception as exc:
            log.error("%s: a batch could not be sent: %r", self.name, exc)
            failed, self._sent, self._results = self._sent or batch, None, []
            _deliver_error(failed, exc)
            self._kick_soon()

    def _send(self, batch: list[Command]) -> None:
        conn = self._conn
        assert conn is not None  # noqa: S101 - checked by the callers
        pgconn = conn.pgconn
        # Render every command before anything is marked sent: a command that cannot be
        # rendered (a programming error: a wrong parameter count, text that cannot be encoded)
        # fails alone, through its own callback, and never stalls the commands behind it.
        texts: list[bytes] = []
        sendable: list[Command] = []
        for command in batch:
            try:
                texts.append(self._render(pgconn, command))
            except (ValueError, TypeError, UnicodeError, psycopg.DataError) as exc:
                _deliver_error([command], exc)
                continue
            sendable.append(command)
        if not sendable:
            self._kick_soon()
            return
        self._sent, self._results = sendable, []
        pgconn.send_query(b";".join(texts))
        while pgconn.flush():  # the rest waits for the socket: rare for a few kB
            select.select([], [self._fd], [], 1.0)

    def _kick_soon(self) -> None:
        if self._queue and self._loop is not None and not self._kicked:
            self._kicked = True
            self._loop.call_soon(self._kick)
        else:
            self._check_drained()

    def _render(self, pgconn: pq.abc.PGconn, command: Command) -> bytes:
        parts = self._parts.get(command.sql)
        if parts is None:
            parts = self._parts[command.sql] = _split(command.sql)
        if len(parts) != len(command.params) + 1:
            raise ValueError(f"{command.sql!r} takes {len(parts) - 1} parameters")
        esc = pq.Escaping(pgconn)
        out = [parts[0].encode()]
        for value, part in zip(command.params, parts[1:], strict=True):
            if value is None:
                out.append(b"NULL")
            elif isinstance(value, bool | int | float):
                out.append(_number(value))
            else:
                out.append(esc.escape_literal(str(value).encode()))
            out.append(part.encode())
        return b"".join(out)

    def _readable(self) -> None:
        """Reader callback: take what arrived; answer the batch once it is complete."""
        if self._sent is None:
            self._idle_input()
        else:
            try:
                done = self._take()
            except psycopg.OperationalError as exc:
                self._lost(exc)
                done = False
            if done:
                self._complete()
        self._deliver_notes()

    def _collect_notes(self, pgconn: pq.abc.PGconn) -> None:
        while (note := pgconn.notifies()) is not None:
            if note.relname.decode() == self._channel:
                self._notes.append(note.extra.decode())

    def _deliver_notes(self) -> None:
        notes, self._notes = self._notes, []
        callback = self.on_notify
        if callback is None:
            return
        for payload in notes:
            try:
                callback(payload)
            except Exception:
                log.exception("%s: notification callback failed", self.name)

    def _idle_input(self) -> None:
        """Input while no batch is in flight: a notice, or the end of the connection (the
        server terminated it): reconnect now rather than at the next batch."""
        conn = self._conn
        if conn is None:
            return
        try:
            conn.pgconn.consume_input()
            self._collect_notes(conn.pgconn)
            if conn.pgconn.status == pq.ConnStatus.BAD:
                raise psycopg.OperationalError("the connection is broken")
        except psycopg.OperationalError as exc:
            self._lost(exc)

    def _take(self) -> bool:
        """Read what the socket has; True once the batch's last result came."""
        conn = self._conn
        assert conn is not None  # noqa: S101 - a batch is in flight
        pgconn = conn.pgconn
        pgconn.consume_input()
        finished = False
        while not pgconn.is_busy():
            res = pgconn.get_result()
            if res is None:
                finished = True
                break
            self._results.append(res)
        # after the results: libpq parses a NOTIFY that follows a result only while the
        # result is taken (is_busy/get_result), and the socket may have nothing more to say
        self._collect_notes(pgconn)
        if not finished:
            if pgconn.status == pq.ConnStatus.BAD:
                raise psycopg.OperationalError("the connection is broken")
            return False
        if pgconn.status == pq.ConnStatus.BAD or any(map(_lost_connection, self._results)):
            # e.g. pg_terminate_backend or a server shutdown: FATAL 57P01, then EOF
            raise psycopg.OperationalError("the connection is broken")
        return True

    def _complete(self) -> None:
        assert self._sent is not None  # noqa: S101 - a batch is in flight
        batch, results = self._sent, self._results
        self._sent, self._results = None, []
        self._down_since = None
        self.transactions += 1
        error = next((r for r in results if r.status == pq.ExecStatus.FATAL_ERROR), None)
        if error is not None:
            _deliver_error(batch, psycopg.errors.error_from_result(error, encoding="utf-8"))
        elif len(results) != len(batch):
            _deliver_error(
                batch, psycopg.InterfaceError(f"{len(results)} results for {len(batch)} commands")
            )
        else:
            for command, res in zip(batch, results, strict=True):
                if command.done is not None:
                    _call_done(command, _value(res, command.rows), None)
        if self._queue:
            self._kick()
        else:
            self._check_drained()

    def _check_drained(self) -> None:
        fut = self._drained
        if fut is not None and not self._queue and self._sent is None and not fut.done():
            fut.set_result(None)

    def _finish_blocking(self) -> None:
        """On the loop's thread: run the batch in flight and everything queued, reading the
        socket directly (the loop is blocked meanwhile)."""
        deadline = time.monotonic() + RETRY_FOR
        while self._sent is not None or self._queue:
            if time.monotonic() > deadline:
                self._fail_queue(TimeoutError(f"{self.name}: no answer within {RETRY_FOR}s"))
                return
            try:
                if self._conn is None:
                    self._adopt(
                        psycopg.Connection.connect(
                            self._url, autocommit=True, connect_timeout=_CONNECT_TIMEOUT
                        )
                    )
                if self._sent is None:
                    self._kick()
                    continue
                if self._take():
                    self._complete()
                else:
                    select.select([self._fd], [], [], 1.0)
            except psycopg.OperationalError as exc:
                if self._sent is not None:
                    self._lost(exc)
                else:
                    self._drop()
                time.sleep(0.05)
        if self._notes and self._loop is not None:
            self._loop.call_soon(self._deliver_notes)


def _value(res: pq.abc.PGresult, rows: bool) -> Any:
    if res.status != pq.ExecStatus.TUPLES_OK:
        return None  # a statement without rows (UPDATE)
    width = res.nfields
    if rows:
        return [tuple(_text(res.get_value(r, c)) for c in range(width)) for r in range(res.ntuples)]
    return _text(res.get_value(0, 0)) if res.ntuples else None


def _lost_connection(res: pq.abc.PGresult) -> bool:
    """A FATAL answer that ends the session (operator intervention, connection failure)."""
    if res.status != pq.ExecStatus.FATAL_ERROR:
        return False
    state = res.error_field(pq.DiagnosticField.SQLSTATE) or b""
    return state.startswith((b"57P", b"08"))


def _number(value: bool | int | float) -> bytes:
    """A number as an SQL literal that reads the same wherever it lands: parenthesised (a
    negative one after ``-`` must not start a ``--`` comment), non-finite floats spelled out."""
    if isinstance(value, bool):
        return b"TRUE" if value else b"FALSE"
    if isinstance(value, float) and not math.isfinite(value):
        word = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
        return f"'{word}'::float8".encode()
    return f"({value!r})".encode()


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode()


def _call_done(command: Command, result: Any, error: BaseException | None) -> None:
    """``command.done``; a callback that raises is logged, the batch's others still run."""
    assert command.done is not None  # noqa: S101 - checked by the callers
    try:
        command.done(result, error)
    except Exception:
        log.exception("callback of %s failed", command.sql)


def _deliver_error(batch: list[Command], exc: BaseException) -> None:
    for command in batch:
        if command.done is not None:
            _call_done(command, None, exc)
        else:
            log.error("SQL command failed: %s: %s", command.sql, exc)
