"""In-memory idempotency keys (see :mod:`corral.store.keys` for the contract). Must not do I/O."""

from __future__ import annotations


class MemoryKeysRepository:
    """Keys in a dict; nothing survives the process."""

    def __init__(self) -> None:
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}

    async def claim(
        self, owner: str, key: str, ticket_id: str, *, now: float, expires_at: float
    ) -> str:
        """Map the key to ``ticket_id`` unless it maps to a ticket already."""
        found = self._keys.get((owner, key))
        if found is not None and found[1] > now:
            return found[0]
        self._keys[(owner, key)] = (ticket_id, expires_at)
        return ticket_id

    async def get(self, owner: str, key: str, now: float) -> str | None:
        """The key's ticket, unless the key expired at ``now``."""
        found = self._keys.get((owner, key))
        if found is None or found[1] <= now:
            return None
        return found[0]

    async def purge(self, now: float) -> int:
        """Forget the keys expired at ``now``."""
        lapsed = [k for k, (_, expires_at) in self._keys.items() if expires_at <= now]
        for k in lapsed:
            del self._keys[k]
        return len(lapsed)
