"""The free worker threads of a cloud backend, handed out by priority (issue 13).

A call takes a free SDK thread *before* its rate-limit slot (a slot taken while every thread is
busy would pass while the call waits in the pool's queue). The threads must go by the same
priority as the slots: a first-come queue would put a poll's describe behind every create of a
storm waiting for a thread, and the describes would starve until the creates are done.

:class:`Workers` is that queue: an asyncio semaphore whose waiters are served by priority (lower
first), then in arrival order, and which keeps ``reserve`` threads for priority-0 calls: creates
waiting for their slots would otherwise hold every thread, and a poll's describe would wait for
a create to end before it could even ask for its slot. Pure asyncio; no threads, no clock, no
cloud.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class Workers:
    """``size`` free threads, given to waiters by priority, then in arrival order."""

    def __init__(self, size: int, reserve: int = 0) -> None:
        """A pool of ``size`` threads, all free; ``reserve`` of them only for priority 0."""
        self.free = size
        """Threads free right now."""
        self.reserve = min(reserve, size - 1)
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def take(self, priority: int = 0) -> None:
        """Wait for a free thread (a cancelled waiter takes none)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), future))
        self._hand_out()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # given a thread, then cancelled
                self.give_back()
            raise

    def give_back(self) -> None:
        """A thread is free again: to the best waiter, if any (on the loop's thread)."""
        self.free += 1
        self._hand_out()

    def _hand_out(self) -> None:
        while self._waiters and self.free > 0:
            priority, _, future = self._waiters[0]
            if future.done():  # cancelled
                heapq.heappop(self._waiters)
                continue
            if priority > 0 and self.free <= self.reserve:
                return  # only reserved threads are free: the best waiter is not theirs
            heapq.heappop(self._waiters)
            self.free -= 1
            future.set_result(None)
