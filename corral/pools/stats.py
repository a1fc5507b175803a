"""Percentiles and the per-pool statistics summary (spawn time, success rate, allocation wait).

Pure: it turns samples into figures and must not read the store or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from corral import exceptions
from corral.pools.model import PoolStats


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) of ``values`` by linear interpolation; None when empty."""
    if not 0 <= q <= 100:
        raise exceptions.InvalidInput(f"percentile must be within 0..100, got {q}")
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = math.ceil(pos)
    if low == high:
        return ordered[low]
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass(frozen=True, slots=True)
class Samples:
    """Raw samples of one pool, as the store keeps them (the most recent ones)."""

    spawn_times: Sequence[float] = ()
    wait_times: Sequence[float] = ()
    spawn_attempts: int = 0
    spawn_failures: int = 0
    terminate_failures: int = 0
    livecheck_failures: int = 0
    wasted_spawns: int = 0
    spawn_outcomes: Sequence[float] = ()
    """The most recent spawns' outcomes, oldest first: 1.0 came up, 0.0 failed."""
    last_spawn_error: str | None = None


def summarize(samples: Samples) -> PoolStats:
    """The pool statistics shown by the API, CLI and dashboard."""
    attempts = samples.spawn_attempts
    rate = None if attempts == 0 else (attempts - samples.spawn_failures) / attempts
    return PoolStats(
        spawn_p50=percentile(samples.spawn_times, 50),
        spawn_p95=percentile(samples.spawn_times, 95),
        spawn_attempts=attempts,
        spawn_failures=samples.spawn_failures,
        spawn_success_rate=rate,
        wait_p50=percentile(samples.wait_times, 50),
        wait_p95=percentile(samples.wait_times, 95),
        terminate_failures=samples.terminate_failures,
        livecheck_failures=samples.livecheck_failures,
        wasted_spawns=samples.wasted_spawns,
        recent_spawns=len(samples.spawn_outcomes),
        recent_spawn_failures=sum(1 for o in samples.spawn_outcomes if o < 0.5),
        last_spawn_error=samples.last_spawn_error,
    )


RECENT_SPAWNS = 20
"""How many of the latest spawns decide whether a pool's spawns are failing."""
FAILING_SHARE = 0.5
"""A pool whose recent spawns failed at least this often is reported as failing."""


def health(stats: PoolStats) -> str | None:
    """Why a pool is unhealthy (its recent spawns fail), or ``None`` when it is fine."""
    recent = stats.recent_spawns
    if recent == 0 or stats.recent_spawn_failures < max(2, recent * FAILING_SHARE):
        return None
    why = f"{stats.recent_spawn_failures} of the last {recent} spawns failed"
    if stats.last_spawn_error:
        why += f"; last: {stats.last_spawn_error}"
    return why
