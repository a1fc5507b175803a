"""A coalescing runner: "something changed, decide again" without lost wake-ups or pile-ups.

``kick(key)`` marks a key dirty and makes sure one runner task is working; the runner takes every
dirty key, runs the work for them, and loops while new kicks arrived meanwhile. However many kicks
come in, at most one run is in flight and one more is pending, and a kick made during a run is
never lost (httpcore's pool re-runs its assignment the same way). This module must not know what
the work is.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from corral import exceptions

K = TypeVar("K", bound=Hashable)
log = logging.getLogger(__name__)


class Coalescer(Generic[K]):
    """Runs ``work(keys)`` for the keys kicked since the last run, one run at a time."""

    def __init__(
        self,
        name: str,
        work: Callable[[list[K]], Awaitable[None]],
        *,
        on_error: Callable[[list[K]], None] | None = None,
    ) -> None:
        """``on_error(keys)`` is called when ``work`` raised a ``CorralError`` (e.g. to retry)."""
        self.name = name
        self._work = work
        self._on_error = on_error
        self._dirty: dict[K, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def kick(self, key: K) -> None:
        """Mark ``key`` dirty; a run for it starts soon (or follows the one in flight)."""
        if self._closed:
            return
        self._dirty[key] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def idle(self) -> bool:
        """True when nothing is dirty and no run is in flight."""
        return not self._dirty and (self._task is None or self._task.done())

    async def _run(self) -> None:
        while self._dirty and not self._closed:
            keys = list(self._dirty)
            self._dirty.clear()
            try:
                await self._work(keys)
            except exceptions.CorralError as exc:
                log.warning("%s failed: %s", self.name, exc)
                if self._on_error is not None:
                    self._on_error(keys)
            except Exception:
                # a bug must not silence every later kick: log it and let the next kick retry
                log.exception("%s failed", self.name)
                if self._on_error is not None:
                    self._on_error(keys)

    async def close(self) -> None:
        """Stop: cancel the run in flight and ignore later kicks."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
