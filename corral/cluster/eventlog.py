"""The cluster-wide event log: one sequence of event ids for every host on one PostgreSQL.

Each host appends the events its controller publishes to ``cluster_events`` (migration 0017),
**one insert per batch** (what gathered during one write tick of the hub), and sends ``NOTIFY
corral_events`` (payload: the batch's last id and its origin) in the same transaction. Every
host tails the table (on another host's notification of an id it has not handed over yet, and
by a slow safety poll) and hands the rows, in id order, to its hub
(:class:`corral.api.stream.EventHub`), so every host streams the same events under the same ids
and a client can resume with ``Last-Event-ID`` on any host. Its own batch, when its first id
directly follows the last one handed over, is handed over as appended, without reading it back
(no other row can lie between: the guard below); otherwise it is read like the others'.

**Why the appenders are serialised.** The ids come from the table's sequence, and a sequence
hands out numbers in the order transactions *ask*, not in the order they *commit*: without a
guard, batch A may take id 10, batch B id 11, B commits first, a reader reads "after 9" and
sees 11, moves its position to 11, and never sees 10 when A commits. So every append first
takes one transaction-level advisory lock (:data:`APPEND_GUARD`), held until its commit: ids are
handed out and made visible in the same order, and "every row after my position" is always a
prefix of what will ever be committed. (PostgreSQL makes a commit visible before it releases
the transaction's locks.) A rolled-back append leaves a gap in the ids, never a reordering.

**Failures.** Each of the three connections (appending, reading, listening) reconnects with
backoff. A batch whose connection died is appended again, unless it already committed (each
batch carries an ``origin`` the retry looks for), so an event is never in the log twice; the
reader resumes after the last id it handed over, so its owner sees no gap and no repeated id.

This module knows nothing of visibility, encoding or listeners: it stores and reads rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from corral import exceptions
from corral.cluster.wakeups import libpq_url

log = logging.getLogger(__name__)

CHANNEL = "corral_events"
"""The channel every append notifies (payload: the batch's last id, a space, its origin)."""

APPEND_GUARD = 7363201
"""The advisory lock every append holds until it commits (the lock table's is 7363200)."""

PRUNE_GUARD = 7363202
"""The advisory lock of a pruning batch (one host prunes at a time; the others skip)."""

POLL = 2.0
"""Seconds between two safety reads when no notification came (a lost NOTIFY costs this)."""

READ_BATCH = 1_000
"""Rows read per query by the tailer."""

PENDING = 50_000
"""Events waiting to be appended (the database unreachable) before they are replaced by one
``resync`` event."""

KEEP = 100_000
"""Rows the table keeps at most (older ones are pruned, as are those older than ``history``)."""

CLOSE_WAIT = 5.0
"""Seconds :meth:`EventLog.close` waits for its tasks and each connection to stop."""

PRUNE_EVERY = 60.0
"""Seconds between two pruning rounds."""

PRUNE_BATCH = 500
"""Rows deleted per statement when pruning."""

PRUNE_BATCHES = 100
"""Statements per pruning round at most (the next round goes on)."""

_GUARD = "SELECT pg_advisory_xact_lock(%s)"
_INSERT = (
    "INSERT INTO cluster_events (at, kind, owner, payload, origin)"
    " SELECT %s, k, o, p, %s FROM unnest(%s::text[], %s::text[], %s::text[])"
    " WITH ORDINALITY AS b(k, o, p, n) ORDER BY n RETURNING id"
)
_NOTIFY = "SELECT pg_notify(%s, %s)"
_AFTER = "SELECT id, kind, owner, payload FROM cluster_events WHERE id > %s ORDER BY id LIMIT %s"
_BOUNDS = "SELECT min(id), max(id) FROM cluster_events"
_TAIL = "SELECT coalesce(max(id), 0) FROM cluster_events"
_HAS_ORIGIN = "SELECT 1 FROM cluster_events WHERE id > %s AND origin = %s LIMIT 1"
_PRUNE_TRY = "SELECT pg_try_advisory_xact_lock(%s)"
_PRUNE_UPTO_AGE = "SELECT max(id) FROM cluster_events WHERE at < %s"
_PRUNE = (
    "DELETE FROM cluster_events WHERE id IN"
    " (SELECT id FROM cluster_events WHERE id <= %s ORDER BY id LIMIT %s)"
)


@dataclass(frozen=True, slots=True)
class Row:
    """One event of the log: its id, kind, the owner of its ticket, and its JSON payload."""

    id: int
    kind: str
    owner: str | None
    payload: str


@dataclass(frozen=True, slots=True)
class Span:
    """What :meth:`EventLog.read_after` found: the oldest and newest ids kept (``None``: the log
    is empty) and the rows after the asked id, oldest first."""

    first: int | None
    last: int | None
    rows: list[Row]


Entry = tuple[str, str | None, str]
"""An event to append: kind, owner, JSON payload."""


async def append_in(
    conn: psycopg.AsyncConnection[Any], entries: Sequence[Entry], origin: str, at: float
) -> list[int]:
    """Append ``entries`` inside the caller's open transaction (the guard is held until it
    ends); their ids, in order. :func:`append_batch` is the whole transaction."""
    await conn.execute(_GUARD, (APPEND_GUARD,))
    cursor = await conn.execute(
        _INSERT,
        (
            at,
            origin,
            [e[0] for e in entries],
            [e[1] for e in entries],
            [e[2] for e in entries],
        ),
    )
    ids = [int(r[0]) for r in await cursor.fetchall()]
    if ids:
        await conn.execute(_NOTIFY, (CHANNEL, f"{ids[-1]} {origin}"))
    return ids


async def append_batch(
    conn: psycopg.AsyncConnection[Any], entries: Sequence[Entry], origin: str, at: float
) -> list[int]:
    """Append ``entries`` in one transaction (one insert, one notification); their ids."""
    async with conn.transaction():
        return await append_in(conn, entries, origin, at)


async def read_rows(conn: psycopg.AsyncConnection[Any], after: int, limit: int) -> list[Row]:
    """Up to ``limit`` rows with an id above ``after``, in id order."""
    cursor = await conn.execute(_AFTER, (after, limit))
    return [Row(int(i), str(k), o, str(p)) for i, k, o, p in await cursor.fetchall()]


class EventLog:
    """Append this host's events and hand every host's, in id order, to ``on_rows``.

    ``origin`` names this host in the rows (a fresh random suffix is added per instance).
    ``coalesce``: seconds between two appends (events gathering meanwhile share one insert).
    ``history`` (seconds, ``None``: no age limit) and ``keep`` bound what the table keeps.
    """

    def __init__(
        self,
        url: str,
        on_rows: Callable[[list[Row]], None],
        *,
        origin: str = "host",
        coalesce: float = 0.025,
        poll: float = POLL,
        history: float | None = None,
        keep: int = KEEP,
        read_batch: int = READ_BATCH,
        pending: int = PENDING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = libpq_url(url)
        if not poll > 0:
            raise exceptions.InvalidInput(f"poll must be > 0 s, got {poll!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise exceptions.InvalidInput(f"keep must be a positive integer, got {keep!r}")
        if history is not None and not history > 0:
            raise exceptions.InvalidInput(f"history must be > 0 s or None, got {history!r}")
        self._on_rows = on_rows
        self.origin = f"{origin[:70]}/{secrets.token_hex(4)}"
        self._coalesce = max(0.0, coalesce)
        self._poll = float(poll)
        self._history = history
        self._keep = keep
        self._read_batch = max(1, read_batch)
        self._pending_max = max(1, pending)
        self._clock = clock
        self._pending: list[Entry] = []
        self._has_pending = asyncio.Event()
        self._kick = asyncio.Event()
        self._read_lock = asyncio.Lock()
        self._append_conn: psycopg.AsyncConnection[Any] | None = None
        self._read_conn: psycopg.AsyncConnection[Any] | None = None
        self._listen_conn: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False
        """Set by :meth:`close`: no connection is made or kept, no task started after it."""
        self._batches = 0
        self.tail = 0
        """The id of the last row handed to ``on_rows``."""
        self.appended = 0
        """Events appended by this instance."""
        self.inserts = 0
        """Insert statements that committed (one per batch)."""
        self.reconnects = 0
        """Connections made again after one failed."""
        self.reads = 0
        """Reads of new rows made by the tailer."""

    # --- life --------------------------------------------------------------------------------

    async def start(self) -> int:
        """Connect, take the log's current end as the starting position and start tailing,
        listening, appending and pruning; the starting position (``StoreError`` when the
        database cannot be reached)."""
        try:
            async with self._read_lock:
                conn = await self._reader()
                cursor = await conn.execute(_TAIL)
                row = await cursor.fetchone()
        except psycopg.Error as exc:
            raise exceptions.StoreError(f"the cluster event log is unreachable: {exc}") from exc
        self.tail = int(row[0]) if row else 0
        if self._closed:  # closed while connecting: start nothing
            return self.tail
        loop = asyncio.get_running_loop()
        for coro in (self._listen(), self._tailer(), self._appender(), self._pruner()):
            self._tasks.append(loop.create_task(coro))
        return self.tail

    async def close(self) -> None:
        """Append what is pending (a short wait at most), then stop and disconnect."""
        self._closed = True
        if self._pending and self._tasks:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2.0):
                    while self._pending or self._has_pending.is_set():
                        await asyncio.sleep(0.01)
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            # bounded: a stopping server must not wait on a connection that never answers
            _, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            if stuck:
                log.warning(
                    "event log: %d tasks did not stop within %.0f s", len(stuck), CLOSE_WAIT
                )
        for conn in (self._append_conn, self._read_conn, self._listen_conn):
            if conn is not None:
                with contextlib.suppress(psycopg.Error, TimeoutError):
                    async with asyncio.timeout(CLOSE_WAIT):
                        await conn.close()
        self._append_conn = self._read_conn = self._listen_conn = None

    def backend_pids(self) -> list[int]:
        """The server processes of the open connections (tests kill them)."""
        conns = (self._append_conn, self._read_conn, self._listen_conn)
        return [c.info.backend_pid for c in conns if c is not None and not c.closed]

    # --- appending ---------------------------------------------------------------------------

    def append(self, kind: str, owner: str | None, payload: str) -> None:
        """Queue one event (never waits); it is appended with the others of the next tick."""
        if len(self._pending) >= self._pending_max:
            lost = len(self._pending)
            log.warning("event log: %d events waiting to be appended; replaced by resync", lost)
            reason = '{"reason":"the event log was unreachable and lost events"}'
            self._pending = [("resync", None, reason)]
        self._pending.append((kind, owner, payload))
        self._has_pending.set()

    async def _appender(self) -> None:
        loop = asyncio.get_running_loop()
        last = -self._coalesce
        while True:
            await self._has_pending.wait()
            delay = last + self._coalesce - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # what gathers meanwhile shares this insert
            batch, self._pending = self._pending, []
            self._batches += 1
            ids = await self._write(batch, f"{self.origin}/{self._batches}")
            if not self._pending:
                self._has_pending.clear()
            last = loop.time()
            if not await self._hand_own(batch, ids):
                self._kick.set()  # our own rows: read them now rather than on the notification

    async def _hand_own(self, batch: list[Entry], ids: list[int] | None) -> bool:
        """Hand this host's batch over as appended, without reading it back, when its ids
        directly follow the last one handed over: the guard makes ids visible in order, so no
        other row lies between, and none can come later. False: it must be read."""
        if ids is None or len(ids) != len(batch) or ids[-1] - ids[0] != len(ids) - 1:
            return False  # unknown ids (a retried batch), or a gap inside the batch
        async with self._read_lock:
            if ids[0] != self.tail + 1:
                return False  # rows of others (or a gap) before it: read them in order
            self.tail = ids[-1]
            self._on_rows([Row(i, e[0], e[1], e[2]) for i, e in zip(ids, batch, strict=True)])
        return True

    async def _write(self, batch: list[Entry], origin: str) -> list[int] | None:
        """Append ``batch`` (retrying); its ids, or ``None`` when a retry found that the lost
        connection had committed it."""
        before = self.tail  # every id of this batch is above the position read so far
        delay = 0.01
        attempt = 0
        while True:
            try:
                conn = self._append_conn
                if conn is None or conn.closed:
                    conn = self._append_conn = await self._connect()
                if attempt:
                    cursor = await conn.execute(_HAS_ORIGIN, (before, origin))
                    if await cursor.fetchone() is not None:
                        return None  # the lost connection had committed it
                ids = await append_batch(conn, batch, origin, self._clock())
                self.appended += len(ids)
                self.inserts += 1
                return ids
            except psycopg.Error as exc:
                attempt += 1
                log.warning("event log: append failed (%s); retrying", exc)
                await self._drop(self._append_conn)
                self._append_conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # --- reading -----------------------------------------------------------------------------

    async def _tailer(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._poll)
            self._kick.clear()
            await self._read_new()

    async def _read_new(self) -> None:
        delay = 0.01
        while True:
            try:
                async with self._read_lock:
                    self.reads += 1
                    rows = await read_rows(await self._reader(), self.tail, self._read_batch)
            except psycopg.Error as exc:
                log.warning("event log: read failed (%s); resuming after %d", exc, self.tail)
                await self._drop(self._read_conn)
                self._read_conn = None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if rows:
                self.tail = rows[-1].id
                self._on_rows(rows)
            if len(rows) < self._read_batch:
                return

    async def read_after(self, after: int, limit: int) -> Span:
        """The ids kept and up to ``limit`` rows after ``after`` (for a client resuming with
        ``Last-Event-ID``); ``StoreError`` when the database cannot be read."""
        try:
            async with self._read_lock:
                conn = await self._reader()
                cursor = await conn.execute(_BOUNDS)
                bounds = await cursor.fetchone()
                rows = await read_rows(conn, after, limit)
        except psycopg.Error as exc:
            await self._drop(self._read_conn)
            self._read_conn = None
            raise exceptions.StoreError(f"the cluster event log is unreachable: {exc}") from exc
        first, last = bounds if bounds is not None else (None, None)
        return Span(
            None if first is None else int(first), None if last is None else int(last), rows
        )

    async def _reader(self) -> psycopg.AsyncConnection[Any]:
        conn = self._read_conn
        if conn is None or conn.closed:
            conn = self._read_conn = await self._connect()
        return conn

    async def _listen(self) -> None:
        delay = 0.01
        while True:
            try:
                conn = self._listen_conn = await self._connect()
                await conn.execute(f"LISTEN {CHANNEL}")
                delay = 0.01
                self._kick.set()  # what was sent while nobody listened: read it now
                async for note in conn.notifies():
                    if self._unseen(note.payload):
                        self._kick.set()
            except psycopg.Error as exc:
                log.warning("event log: LISTEN connection failed (%s); reconnecting", exc)
            await self._drop(self._listen_conn)
            self._listen_conn = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _unseen(self, payload: str) -> bool:
        """Whether a notification's batch may hold rows not handed over yet: not one of this
        host's own batches (its appender hands it over or reads it), and its last id is above
        the tail (rows are handed over as a prefix of the log, so one at or below it was handed
        over already, by an earlier read)."""
        last, _, origin = payload.partition(" ")
        if origin.startswith(f"{self.origin}/"):
            return False
        try:
            return int(last) > self.tail
        except ValueError:
            return True

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        if self._closed:
            raise asyncio.CancelledError("the event log is closed")
        conn = await psycopg.AsyncConnection.connect(self._url, autocommit=True, connect_timeout=10)
        if self._closed:  # closed while this connection was being made: nobody would close it
            await self._drop(conn)
            raise asyncio.CancelledError("the event log is closed")
        self.reconnects += 1
        return conn

    @staticmethod
    async def _drop(conn: psycopg.AsyncConnection[Any] | None) -> None:
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                await conn.close()

    # --- retention ---------------------------------------------------------------------------

    async def _pruner(self) -> None:
        while True:
            await asyncio.sleep(PRUNE_EVERY)
            try:
                await self.prune(self._clock())
            except psycopg.Error as exc:
                log.warning("event log: pruning failed (%s); next round in %.0f s", exc, 60)

    async def prune(self, now: float, *, batch: int = PRUNE_BATCH) -> int:
        """Delete rows beyond ``keep`` or older than ``history`` (never the newest row, so the
        ids kept always say where the log stands), ``batch`` rows per statement, one host at a
        time; how many were deleted."""
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise exceptions.InvalidInput(f"batch must be a positive integer, got {batch!r}")
        async with await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=10
        ) as conn:
            cursor = await conn.execute(_BOUNDS)
            bounds = await cursor.fetchone()
            if bounds is None or bounds[1] is None:
                return 0
            newest = int(bounds[1])
            upto = newest - self._keep
            if self._history is not None:
                cursor = await conn.execute(_PRUNE_UPTO_AGE, (now - self._history,))
                aged = await cursor.fetchone()
                if aged is not None and aged[0] is not None:
                    upto = max(upto, int(aged[0]))
            upto = min(upto, newest - 1)
            deleted = 0
            for _ in range(PRUNE_BATCHES):
                async with conn.transaction():
                    cursor = await conn.execute(_PRUNE_TRY, (PRUNE_GUARD,))
                    got = await cursor.fetchone()
                    if got is None or not got[0]:
                        return deleted  # another host prunes now
                    cursor = await conn.execute(_PRUNE, (upto, batch))
                    gone = cursor.rowcount
                deleted += gone
                if gone < batch:
                    break
                await asyncio.sleep(0)
            return deleted


__all__ = [
    "APPEND_GUARD",
    "CHANNEL",
    "EventLog",
    "Row",
    "Span",
    "append_batch",
    "append_in",
    "read_rows",
]
