"""How much a pool is being asked for: the consumption rate and the spawn time, and from them how
many spawns should be in flight (Little's law), pure.

A pool that keeps only ``min_ready`` plus one VM per waiting ticket in flight serves a burst at
``(min_ready + waiting) / spawn time`` at best, whatever ``max_starting`` allows. With the rate at
which tickets take VMs (``rate``, per second) and the time a spawn takes (``spawn_time``), the
spawns that must be in flight to keep up are ``rate * spawn_time``; the preallocation plans that
many (within ``max_starting`` and ``max``). The rate is an exponentially decaying event rate, so
when demand falls the target falls with it, and fresh VMs spawned for demand that went away are
retired (and counted as wasted spawns). Times are passed in; this module must not do I/O or read a
clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HALF_LIFE = 10.0
"""Seconds after which an observation counts half: how fast the estimate follows demand."""


@dataclass(frozen=True, slots=True)
class Rate:
    """An exponentially weighted event rate (events per second) as of ``at``."""

    value: float = 0.0
    at: float | None = None

    def decayed(self, now: float, half_life: float = HALF_LIFE) -> float:
        """The rate as of ``now``, with no event since ``at``."""
        if self.at is None:
            return 0.0
        return self.value * math.pow(0.5, max(0.0, now - self.at) / half_life)

    def observe(self, now: float, count: int = 1, half_life: float = HALF_LIFE) -> Rate:
        """The rate after ``count`` events at ``now``.

        An event adds ``ln 2 / half_life`` to the rate, so a steady stream of ``r`` events per
        second converges on ``r``.
        """
        tau = half_life / math.log(2)
        return Rate(self.decayed(now, half_life) + count / tau, now)


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
