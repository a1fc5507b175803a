"""Idempotency keys of ``POST /v1/tickets``: which ticket a client's request key created.

A client sends ``Idempotency-Key: K`` with a create. If the request is interrupted (cancelled,
timed out, Ctrl-C) the client may never see the answer, yet the server may have created the ticket;
the key lets the client find that ticket (``GET /v1/tickets/by-key/K``) and close it, and makes a
retried create return the same ticket instead of queueing a second one.

Keys are remembered by this process only, per owner, for :data:`KEY_TTL` seconds (at most
:data:`MAX_KEYS` of them). A key is reserved before the ticket is written, so a lookup that arrives
while its create is still running waits for it rather than missing it.

This module must not talk to the controller: it only maps keys to ticket ids.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from corral import exceptions

KEY_TTL = 3600.0
"""How long a key is remembered, in seconds."""

MAX_KEYS = 100_000
"""The most keys remembered at once; the oldest are forgotten first."""

_KEY = re.compile(r"[A-Za-z0-9_.:-]{8,128}")


def check_key(key: str) -> str:
    """``key`` if it is a valid idempotency key (8 to 128 characters of ``A-Za-z0-9_.:-``)."""
    if not _KEY.fullmatch(key):
        raise exceptions.InvalidInput(
            "header 'Idempotency-Key': 8 to 128 characters of letters, digits and '_.:-'"
        )
    return key


class TicketKeys:
    """``(owner, key) -> ticket id`` for the creates of the last :data:`KEY_TTL` seconds."""

    def __init__(
        self,
        *,
        ttl: float = KEY_TTL,
        limit: int = MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._limit = limit
        self._clock = clock
        # Futures resolve to the ticket id, or to None when the create failed.
        self._keys: OrderedDict[tuple[str, str], tuple[float, asyncio.Future[str | None]]] = (
            OrderedDict()
        )

    def __len__(self) -> int:
        return len(self._keys)

    def _prune(self) -> None:
        now = self._clock()
        while self._keys:
            key, (expires, _) = next(iter(self._keys.items()))
            if expires > now and len(self._keys) <= self._limit:
                return
            del self._keys[key]

    async def lookup(self, owner: str, key: str) -> str | None:
        """The id of the ticket ``owner`` created with ``key`` (waits for a create in progress)."""
        self._prune()
        entry = self._keys.get((owner, key))
        if entry is None:
            return None
        return await asyncio.shield(entry[1])

    @asynccontextmanager
    async def creating(self, owner: str, key: str) -> AsyncIterator[Callable[[str], None]]:
        """Reserve ``key`` around a create; the body calls the yielded function with the new id.

        Leaving without an id (the create failed) forgets the key, so it may be used again.
        """
        self._prune()
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._keys[(owner, key)] = (self._clock() + self._ttl, future)

        def created(ticket_id: str) -> None:
            future.set_result(ticket_id)

        try:
            yield created
        finally:
            if not future.done():
                future.set_result(None)
                if self._keys.get((owner, key), (0.0, None))[1] is future:
                    del self._keys[(owner, key)]
