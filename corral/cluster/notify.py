"""A thread that LISTENs on one channel, heartbeats a host lease, and survives lost connections.

Notifications are handed to ``on_notify(payload)`` as they arrive (no polling: the thread
blocks on the connection's socket until a notification or the next heartbeat is due). After a
reconnect, ``on_resync()`` is called once LISTEN is in place again: a notification sent while
the connection was down is lost, so the owner must re-read its state then. ``on_beat()`` runs
on the listener's connection at every heartbeat; if it raises :class:`LeaseLapsed`, the owner
learns it through ``on_lapsed()`` and the thread goes on (the owner re-registers).
Further ``channels`` may be listened on too; their messages go to ``on_message(channel,
payload)`` (the main channel stays the owner's private one, where :data:`STOP` ends the thread).

Callbacks run on this thread and must not block; they usually hand over to an event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger(__name__)

STOP = "stop"


class LeaseLapsed(Exception):
    """Raised by ``on_beat`` when the host's lease had lapsed before it could be renewed."""


class Listener(threading.Thread):
    """LISTEN on ``channel`` with heartbeats every ``interval`` seconds; reconnects forever."""

    def __init__(
        self,
        url: str,
        channel: str,
        interval: float,
        on_notify: Callable[[str], None],
        on_beat: Callable[[psycopg.Connection[Any]], None],
        on_resync: Callable[[], None],
        on_lapsed: Callable[[psycopg.Connection[Any]], str],
        *,
        channels: Sequence[str] = (),
        on_message: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__(name=f"corral-listen-{channel}", daemon=True)
        self._url = url
        self.channel = channel
        self._interval = interval
        self._on_notify = on_notify
        self._on_beat = on_beat
        self._on_resync = on_resync
        self._on_lapsed = on_lapsed
        # further channels (one per purpose); their messages go to on_message(channel, payload)
        self._channels = tuple(channels)
        self._on_message = on_message
        self._stopping = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self.listening = threading.Event()
        self.reconnects = 0

    def stop(self) -> None:
        """Ask the thread to end; the owner also sends :data:`STOP` on the channel to wake it."""
        self._stopping.set()

    def backend_pid(self) -> int | None:
        """The server process id of the listening connection (``None`` while reconnecting)."""
        conn = self._conn
        return None if conn is None or conn.closed else conn.info.backend_pid

    def run(self) -> None:
        try:
            self._run()
        finally:
            if self._conn is not None:
                self._conn.close()

    def _run(self) -> None:
        delay = 0.01
        first = True
        next_beat = 0.0
        while not self._stopping.is_set():
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = self._connect()
                    for channel in (self.channel, *self._channels):
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    if not first:
                        self.reconnects += 1
                        self._on_resync()
                    first = False
                    delay = 0.01
                if time.monotonic() >= next_beat:
                    self._beat(conn)
                    next_beat = time.monotonic() + self._interval
                wait = max(0.0, next_beat - time.monotonic())
                for note in conn.notifies(timeout=wait):
                    if self._stopping.is_set() or not self._dispatch(note):
                        return
                    if time.monotonic() >= next_beat:
                        break
            except psycopg.Error as exc:
                # A lost connection, or a failed heartbeat query: start again on a new one.
                log.warning("LISTEN connection failed (%s); reconnecting", exc)
                self.listening.clear()
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
                if self._stopping.wait(delay):
                    break
                delay = min(delay * 2, 1.0)

    def _dispatch(self, note: psycopg.Notify) -> bool:
        """Hand ``note`` to its callback; False for :data:`STOP` on the main channel."""
        if note.channel != self.channel:
            if self._on_message is not None:
                self._on_message(note.channel, note.payload)
        elif note.payload == STOP:
            return False
        else:
            self._on_notify(note.payload)
        return True

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self._url, autocommit=True, connect_timeout=10)

    def _beat(self, conn: psycopg.Connection[Any]) -> None:
        try:
            self._on_beat(conn)
        except LeaseLapsed:
            channel = self._on_lapsed(conn)
            if channel != self.channel:
                conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(self.channel)))
                self.channel = channel
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
