"""Idempotency keys of ``POST /v1/tickets``: which ticket a client's request key created.

A client sends ``Idempotency-Key: K`` with a create. If the request is interrupted (cancelled,
timed out, Ctrl-C) the client may never see the answer, yet the server may have created the ticket;
the key lets the client find that ticket (``GET /v1/tickets/by-key/K``) and close it, and makes a
retried create return the same ticket instead of queueing a second one.

Keys are kept in the store (:attr:`corral.store.Store.keys`), per owner, for :data:`KEY_TTL`
seconds, so a client interrupted by a server restart finds its ticket on the next server. A key is
reserved in this process before the ticket is written, so a lookup that arrives while its create is
still running waits for it rather than missing it; the key is recorded in the store right after the
ticket (a crash between the two leaves a ticket without a key, which its lease reclaims).

This module must not talk to the controller: it only maps keys to ticket ids.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from corral import exceptions

if TYPE_CHECKING:
    from corral.store.keys import KeysRepository

KEY_TTL = 3600.0
"""How long a key is remembered, in seconds."""

MAX_KEYS = 100_000
"""The most keys :class:`LocalKeys` remembers at once; the oldest are forgotten first."""

PURGE_EVERY = 60.0
"""Seconds between two purges of expired keys from the store."""

_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,128}")


def check_key(key: str) -> str:
    """``key`` if it is a valid idempotency key (8 to 128 characters of ``A-Za-z0-9_.:-``)."""
    if not _KEY.fullmatch(key):
        raise exceptions.InvalidInput(
            "header 'Idempotency-Key': 8 to 128 characters of letters, digits and '_.:-'"
        )
    return key


class LocalKeys:
    """Keys in this process only, at most ``limit`` of them (the oldest are forgotten first): for
    a store that keeps none. Satisfies :class:`corral.store.keys.KeysRepository`."""

    def __init__(self, limit: int = MAX_KEYS) -> None:
        self._limit = limit
        self._keys: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._keys)

    async def claim(
        self, owner: str, key: str, ticket_id: str, *, now: float, expires_at: float
    ) -> str:
        """Map the key to ``ticket_id`` unless it maps to a live ticket already."""
        found = self._keys.get((owner, key))
        if found is not None and found[1] > now:
            return found[0]
        self._keys[(owner, key)] = (ticket_id, expires_at)
        while len(self._keys) > self._limit:
            self._keys.popitem(last=False)
        return ticket_id

    async def get(self, owner: str, key: str, now: float) -> str | None:
        """The key's ticket, unless it expired."""
        found = self._keys.get((owner, key))
        return None if found is None or found[1] <= now else found[0]

    async def purge(self, now: float) -> int:
        """Forget the expired keys."""
        lapsed = [k for k, (_, expires_at) in self._keys.items() if expires_at <= now]
        for k in lapsed:
            del self._keys[k]
        return len(lapsed)


class TicketKeys:
    """``(owner, key) -> ticket id`` for the creates of the last :data:`KEY_TTL` seconds."""

    def __init__(
        self,
        repository: KeysRepository | None = None,
        *,
        ttl: float = KEY_TTL,
        limit: int = MAX_KEYS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._repo: KeysRepository = repository if repository is not None else LocalKeys(limit)
        self._ttl = ttl
        self._clock = clock
        self._purged_at = float("-inf")
        # Creates in progress in this process; futures resolve to the ticket id, or to None when
        # the create failed.
        self._busy: dict[tuple[str, str], asyncio.Future[str | None]] = {}

    async def lookup(self, owner: str, key: str) -> str | None:
        """The id of the ticket ``owner`` created with ``key`` (waits for a create in progress)."""
        busy = self._busy.get((owner, key))
        if busy is not None:
            found = await asyncio.shield(busy)
            if found is not None:
                return found
        return await self._repo.get(owner, key, self._clock())

    @asynccontextmanager
    async def creating(
        self, owner: str, key: str
    ) -> AsyncIterator[Callable[[str], Awaitable[str]]]:
        """Reserve ``key`` around a create; the body awaits the yielded function with the new
        ticket's id, which records the key and returns the ticket the key belongs to (another
        server may have recorded it first).

        Leaving without recording (the create failed) frees the key.
        """
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._busy[(owner, key)] = future

        async def record(ticket_id: str) -> str:
            now = self._clock()
            if now - self._purged_at > PURGE_EVERY:
                self._purged_at = now
                await self._repo.purge(now)
            winner = await self._repo.claim(
                owner, key, ticket_id, now=now, expires_at=now + self._ttl
            )
            future.set_result(winner)
            return winner

        try:
            yield record
        finally:
            if not future.done():
                future.set_result(None)
            if self._busy.get((owner, key)) is future:
                del self._busy[(owner, key)]
