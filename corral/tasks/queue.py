"""The run queue: high before medium before low, first in first out within a priority.

Pure (a heap and a counter); the engine decides when a slot is free. Must not await anything.
"""

from __future__ import annotations

import heapq
import itertools

from corral.tasks.model import PRIORITY_RANK, Priority


class RunQueue:
    """Task ids waiting for a run slot."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, str]] = []
        self._queued: dict[str, int] = {}
        self._seq = itertools.count()

    def push(self, task_id: str, priority: Priority) -> None:
        """Queue ``task_id`` behind every task of the same or higher priority."""
        if task_id in self._queued:
            raise ValueError(f"{task_id} is already queued")
        seq = next(self._seq)
        self._queued[task_id] = seq
        heapq.heappush(self._heap, (PRIORITY_RANK[priority], seq, task_id))

    def remove(self, task_id: str) -> bool:
        """Take ``task_id`` out of the queue; whether it was there."""
        if task_id not in self._queued:
            return False
        del self._queued[task_id]
        return True

    def pop(self) -> str | None:
        """The next task to run, or ``None`` when nothing waits."""
        while self._heap:
            _, seq, task_id = heapq.heappop(self._heap)
            if self._queued.get(task_id) == seq:  # else removed (and maybe queued again)
                del self._queued[task_id]
                return task_id
        return None

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, task_id: object) -> bool:
        return task_id in self._queued
