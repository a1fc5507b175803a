"""Dashboard sessions: a token typed once becomes an HttpOnly, SameSite=Strict cookie.

The cookie holds a random session id, never the token; the id maps to the caller in memory
(a restart logs everyone out). Sessions expire after :data:`LIFETIME` seconds. This module must
not log, print or store a token.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from corral.api.auth import Principal

COOKIE = "corral_session"
"""Name of the session cookie."""

LIFETIME = 12 * 3600.0
"""Seconds a session lasts."""

MAX_SESSIONS = 10_000
"""Sessions kept at most (the oldest go first)."""


class Sessions:
    """Session ids and the callers they stand for."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._by_id: dict[str, tuple[Principal, float]] = {}

    def open(self, principal: Principal) -> str:
        """A new session for ``principal``; returns its id (the cookie's value)."""
        while len(self._by_id) >= MAX_SESSIONS:
            self._by_id.pop(next(iter(self._by_id)))
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (principal, self._clock() + LIFETIME)
        return sid

    def get(self, sid: str | None) -> Principal | None:
        """The caller of session ``sid``, or ``None`` when unknown or expired."""
        if not sid:
            return None
        found = self._by_id.get(sid)
        if found is None:
            return None
        principal, expires = found
        if self._clock() >= expires:
            del self._by_id[sid]
            return None
        return principal

    def close(self, sid: str | None) -> None:
        """Forget session ``sid`` (log out)."""
        if sid:
            self._by_id.pop(sid, None)
