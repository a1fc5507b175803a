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
    )
