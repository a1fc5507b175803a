"""How much a pool is being asked for: the consumption rate and the spawn time, and from them how
many spawns should be in flight (Little's law), pure.

A pool that keeps only ``min_ready`` plus one VM per waiting ticket in flight serves a burst at
``(min_ready + waiting) / spawn time`` at best, whatever ``max_starting`` allows. With the rate at
which tickets take VMs (``rate``, per second) and the time a spawn takes (``spawn_time``), the
spawns that must be in flight to keep up are ``rate * spawn_time``; the preallocation plans that
many (within ``max_starting`` and ``max``). The rate looks back a few seconds, so
when demand falls the target falls with it, and fresh VMs spawned for demand that went away are
retired (and counted as wasted spawns). Times are passed in; this module must not do I/O or read a
clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

SPAN = 5.0
"""Seconds of consumption the rate looks back on: demand older than this is forgotten."""


class Rate:
    """How many tickets per second took a VM, over the last :data:`SPAN` seconds.

    ``rate(now, floor)`` divides the intervals between the events still in the window by the
    time they cover, but by no less than ``floor`` (the spawn time): at the start of a burst
    the estimate is "as many as were taken in the last spawn time", so the pool reacts within
    one spawn time, not after a slow average caught up; when demand stops, the events age out
    and the rate falls to 0 within the span. Pure: times are passed in (it keeps a bounded list
    of them).
    """

    __slots__ = ("_events", "_span")

    def __init__(self, span: float = SPAN, limit: int = 100_000) -> None:
        self._span = span
        self._events: deque[float] = deque(maxlen=limit)

    def observe(self, now: float, count: int = 1) -> None:
        """``count`` tickets took a VM at ``now``."""
        self._events.extend([now] * count)

    def rate(self, now: float, floor: float = 1.0) -> float:
        """Tickets per second as of ``now`` (0 without recent events)."""
        events = self._events
        while events and events[0] <= now - self._span:
            events.popleft()
        if len(events) < 2:
            return 0.0  # one event is no rate: a trickle needs nothing spawned ahead of it
        return (len(events) - 1) / max(now - events[0], floor, 1e-9)


@dataclass(frozen=True, slots=True)
class Average:
    """An exponentially weighted average of samples (the spawn time)."""

    value: float | None = None
    weight: float = 0.2

    def observe(self, sample: float) -> Average:
        """The average after one more sample."""
        if self.value is None:
            return Average(sample, self.weight)
        return Average(self.value + self.weight * (sample - self.value), self.weight)


def in_flight(rate: float, spawn_time: float | None) -> int:
    """Spawns to keep in flight to serve ``rate`` tickets per second (Little's law), rounded up;
    0 until a spawn time is known or when there is no demand."""
    if spawn_time is None or rate <= 0 or spawn_time <= 0:
        return 0
    # a trickle (well under one ticket per spawn time) needs no spawn ahead of it
    wanted = rate * spawn_time
    return 0 if wanted < 0.25 else math.ceil(wanted)
