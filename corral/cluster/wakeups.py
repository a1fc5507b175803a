"""Cross-host wake-ups: a change made through one host wakes the waiters of every other host.

Several ``corral serve`` processes share one PostgreSQL (SPEC §8). A VM that becomes ready
through host A must reach a ticket waiting on host B within milliseconds, not at B's next
tick: A assigns it (A's assignment round after its own commit covers every host's tickets)
and B's long-poll must hear of it. Each host sends a ``NOTIFY`` after its own store write
committed, and LISTENs for the others' on one channel per purpose:

- ``corral_ticket`` (payload: a ticket id): that ticket changed: its long-poll waiters re-read it;
- ``corral_spawn`` (payload: a pool): the pool needs supply: its leader re-plans its
  preallocation.

(``corral_assign``, "a VM became free: re-run the assignment", is no longer sent nor heard:
see :mod:`corral.controller.crosshost`.)

Every payload starts with the sender's session id, so a host ignores its own messages (it has
already acted on them locally). Sending goes through a :class:`~corral.cluster.batcher.Batcher`
(its own connection; callers never wait; notifications queued together share one transaction).
Receiving is a :class:`~corral.cluster.notify.Listener` thread whose heartbeat is a keep-alive
query, so a dead connection is noticed within one interval. A notification sent while the
connection was down is lost, so after every reconnect ``on_resync()`` is called: the owner
re-reads its state (kicks every runner, wakes every waiter), and no wake-up is lost.

A host that dies between its commit and its ``NOTIFY`` loses that wake-up: the waiters'
periodic re-reads (the controller's tick) remain the backstop for that case only.

This module knows nothing of tickets or pools beyond the names it carries: the owner gives it
callbacks, run on the owner's event loop. It must not touch the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import psycopg

from corral import exceptions
from corral.cluster import hosts
from corral.cluster.batcher import Batcher, Command
from corral.cluster.notify import STOP, Listener

log = logging.getLogger(__name__)

TICKET = "corral_ticket"
SPAWN = "corral_spawn"
CHANNELS = (TICKET, SPAWN)

_NOTIFY = "SELECT pg_notify(%s, %s)"
_KEEPALIVE = "SELECT 1"


def libpq_url(url: str) -> str:
    """A libpq URL from corral's store URL spelling (``postgresql+psycopg://`` accepted)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if not url.startswith("postgresql://"):
        raise exceptions.InvalidInput(f"cross-host wake-ups need a postgresql:// URL, got {url!r}")
    return url


class Wakeups:
    """Send and receive cross-host wake-ups on one PostgreSQL database.

    ``on_ticket(ticket_id)`` and ``on_spawn(pool)`` are called on the event loop
    of :meth:`start` for other hosts' messages; ``on_resync()`` after a reconnect of the
    listening connection. ``keepalive`` is how often the listening connection is checked (s).
    """

    def __init__(
        self,
        url: str,
        *,
        on_ticket: Callable[[str], None],
        on_spawn: Callable[[str], None],
        on_resync: Callable[[], None],
        keepalive: float = 2.0,
    ) -> None:
        self._url = libpq_url(url)
        if not keepalive > 0:
            raise exceptions.InvalidInput(f"keepalive must be > 0 s, got {keepalive!r}")
        self._keepalive = float(keepalive)
        self.session = hosts.new_session()
        self._handlers: dict[str, Callable[[str], None]] = {
            TICKET: on_ticket,
            SPAWN: on_spawn,
        }
        self._on_resync = on_resync
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: Batcher | None = None
        self._listener: Listener | None = None
        self.received = 0
        """Messages of other hosts handed to a callback (for tests and diagnostics)."""

    @property
    def private_channel(self) -> str:
        """This instance's own channel (only :data:`~corral.cluster.notify.STOP` is sent on it)."""
        return f"cw_{self.session}"

    async def start(self) -> Wakeups:
        """Connect both threads; return once listening (``StoreError`` after 30 s)."""
        self._loop = asyncio.get_running_loop()
        self._batcher = Batcher(self._url, name="corral-wakeups-send")
        self._batcher.start()
        self._listener = Listener(
            self._url,
            self.private_channel,
            self._keepalive,
            self._ignore,
            self._beat,
            self._from_thread_resync,
            self._same_channel,
            channels=CHANNELS,
            on_message=self._from_thread,
        )
        self._listener.start()
        if not await asyncio.to_thread(self._listener.listening.wait, 30.0):
            await self.close()
            raise exceptions.StoreError("could not LISTEN for cross-host wake-ups within 30 s")
        return self

    async def close(self) -> None:
        """Stop both threads (messages already queued are sent first)."""
        batcher, listener = self._batcher, self._listener
        self._batcher = self._listener = None
        if listener is not None:
            listener.stop()
        if batcher is not None:
            if listener is not None:
                batcher.submit(Command(_NOTIFY, (listener.channel, STOP)))
            batcher.stop()
            await asyncio.to_thread(batcher.join, 30.0)
        if listener is not None:
            await asyncio.to_thread(listener.join, 30.0)

    def listener_pid(self) -> int | None:
        """The server process of the listening connection (tests kill it to force a reconnect)."""
        listener = self._listener
        return None if listener is None else listener.backend_pid()

    # --- sending (never waits) ----------------------------------------------------------------

    def ticket(self, ticket_id: str) -> None:
        """Tell the other hosts that ``ticket_id`` changed (its waiters re-read it)."""
        self._send(TICKET, ticket_id)

    def spawn(self, pool: str) -> None:
        """Tell the other hosts to re-plan the preallocation of ``pool``."""
        self._send(SPAWN, pool)

    def _send(self, channel: str, arg: str) -> None:
        batcher = self._batcher
        if batcher is not None:
            batcher.submit(Command(_NOTIFY, (channel, f"{self.session} {arg}")))

    # --- receiving (on the listener's thread, handed to the loop) -----------------------------

    @staticmethod
    def _ignore(_payload: str) -> None:
        return None  # nothing but STOP is sent on the private channel

    @staticmethod
    def _beat(conn: psycopg.Connection[Any]) -> None:
        conn.execute(_KEEPALIVE)

    def _same_channel(self, _conn: psycopg.Connection[Any]) -> str:
        return self.private_channel  # no lease here: never called

    def _from_thread(self, channel: str, payload: str) -> None:
        sender, _, arg = payload.partition(" ")
        handler = self._handlers.get(channel)
        if sender == self.session or handler is None:
            return
        self._call_soon(self._deliver, handler, arg)

    def _deliver(self, handler: Callable[[str], None], arg: str) -> None:
        self.received += 1
        handler(arg)

    def _from_thread_resync(self) -> None:
        self._call_soon(self._on_resync)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        try:
            loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more


__all__ = ["CHANNELS", "SPAWN", "TICKET", "Wakeups", "libpq_url"]
