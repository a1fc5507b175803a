"""Coalescing concurrent cloud calls: one describe per interval, one terminate per batch.

A cloud API charges its rate limit per call, not per machine. :class:`Coalescer` lets many
concurrent callers share one call: every caller that arrives while no round has *started* joins
the next round; one task runs the rounds, at most one per ``min_interval`` seconds, each with the
items of its callers, and every caller of a round gets that round's result (or its error). A
caller is therefore always answered by a call that began after it asked: a poll never gets a stale
answer. Cancelling a caller does not cancel the round the others wait for.

Must not know about clouds: the round is a function passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


class _Round(Generic[K, R]):
    __slots__ = ("future", "items")

    def __init__(self, future: asyncio.Future[R]) -> None:
        self.items: set[K] = set()
        self.future = future


class Coalescer(Generic[K, R]):
    """Runs ``call(items)`` once for every caller that asked before the round started."""

    def __init__(
        self,
        call: Callable[[frozenset[K]], Awaitable[R]],
        *,
        min_interval: float = 0.0,
        max_items: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``call`` runs one round; rounds start at least ``min_interval`` seconds apart.

        With ``max_items``, a round takes at most that many items; the rest go to the next round.
        """
        self._call = call
        self.min_interval = min_interval
        self.max_items = max_items
        self._clock = clock
        self._next: _Round[K, R] | None = None
        self._overflow: list[_Round[K, R]] = []
        self._task: asyncio.Task[None] | None = None
        self._last_start: float | None = None
        self.rounds = 0
        """Rounds run so far (each is one call of ``call``)."""

    async def submit(self, *items: K) -> R:
        """Join the next round with ``items`` and return its result."""
        loop = asyncio.get_running_loop()
        current = self._next
        if current is None or (
            self.max_items is not None and len(current.items | set(items)) > self.max_items
        ):
            if current is not None:
                self._overflow.append(current)
            current = self._next = _Round(loop.create_future())
            current.future.add_done_callback(_consume)
        current.items.update(items)
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())
        return await asyncio.shield(current.future)

    async def _run(self) -> None:
        while self._overflow or self._next is not None:
            if self._last_start is not None:
                wait = self._last_start + self.min_interval - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
            if self._overflow:
                round_ = self._overflow.pop(0)
            elif self._next is not None:
                round_, self._next = self._next, None
            else:  # pragma: no cover - the loop condition excludes it
                break
            self._last_start = self._clock()
            self.rounds += 1
            try:
                result = await self._call(frozenset(round_.items))
            except asyncio.CancelledError:
                round_.future.cancel()
                raise
            except Exception as exc:
                round_.future.set_exception(exc)
            else:
                round_.future.set_result(result)

    async def aclose(self) -> None:
        """Stop the round runner; callers still waiting are cancelled."""
        task, self._task = self._task, None
        pending = [*self._overflow, *([self._next] if self._next else [])]
        self._overflow, self._next = [], None
        for round_ in pending:
            round_.future.cancel()
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark a round's error as retrieved: its callers may all have been cancelled meanwhile."""
    if not future.cancelled():
        future.exception()
