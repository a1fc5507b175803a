"""The idempotency keys repository contract: which ticket a client's ``Idempotency-Key`` created.

A client that sends ``Idempotency-Key: K`` with a create may never see the answer (Ctrl-C, a lost
connection, the server killed or restarted). Kept in the store, the key lets it find the ticket
(and close it, or go on waiting for it) from any later server process. Keys are per owner and
expire (wall-clock ``expires_at``); an expired key is as good as absent and is purged.

Implementations: :mod:`corral.store.memory.keys`, :mod:`corral.store.sql.keys`; one contract
suite (``tests/store/test_keys_contract.py``) runs against all of them. This module must not know
about SQL or HTTP.
"""

from __future__ import annotations

from typing import Protocol


class KeysRepository(Protocol):
    """``(owner, key) -> ticket id`` with an expiry."""

    async def claim(
        self, owner: str, key: str, ticket_id: str, *, now: float, expires_at: float
    ) -> str:
        """Map ``(owner, key)`` to ``ticket_id`` until ``expires_at``, unless it maps to a
        ticket already (a key expired at ``now`` does not count); return the ticket it maps to.

        Atomic: of two concurrent claims of one key, one wins and both learn the winner.
        """

    async def get(self, owner: str, key: str, now: float) -> str | None:
        """The ticket ``(owner, key)`` maps to, if the key has not expired at ``now``."""

    async def purge(self, now: float) -> int:
        """Forget every key expired at ``now``; how many were forgotten."""
