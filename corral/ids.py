"""Random identifiers (tickets, tasks): version-4 UUIDs as hex, from the OS's random source.

One generator for the package. Its randomness is read from ``os.urandom`` in batches: one system
call per :data:`BATCH` ids instead of one per id (a system call releases the GIL, and on a busy
server getting it back costs far more than the call). Ids are unpredictable — they come from the
OS's cryptographic source, never from a seeded PRNG — and a forked child draws its own
randomness, never reusing its parent's. Not thread-safe: each event loop owns its generator.
"""

from __future__ import annotations

import os
import uuid

BATCH = 256
"""Ids drawn from the OS's random source per system call."""


class IdGenerator:
    """Hands out fresh random ids."""

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0
        self._pid = 0

    def uuid(self) -> uuid.UUID:
        """A fresh version-4 UUID."""
        if self._next >= len(self._pool) or self._pid != os.getpid():
            self._pool, self._next, self._pid = os.urandom(16 * BATCH), 0, os.getpid()
        raw = self._pool[self._next : self._next + 16]
        self._next += 16
        return uuid.UUID(bytes=raw, version=4)

    def hex(self) -> str:
        """A fresh id as 32 hex digits (tickets)."""
        return self.uuid().hex

    def text(self) -> str:
        """A fresh id in the canonical dashed form (tasks)."""
        return str(self.uuid())
