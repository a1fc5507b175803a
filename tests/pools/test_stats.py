"""Percentiles and the pool statistics summary."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.pools import stats


def test_percentile() -> None:
    assert stats.percentile([], 50) is None
    assert stats.percentile([3.0], 95) == 3.0
    assert stats.percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert stats.percentile(list(map(float, range(101))), 95) == 95.0
    with pytest.raises(exceptions.InvalidInput):
        stats.percentile([1.0], 101)


def test_summarize() -> None:
    s = stats.summarize(
        stats.Samples(spawn_times=[1.0, 3.0], wait_times=[0.1], spawn_attempts=4, spawn_failures=1)
    )
    assert s.spawn_p50 == 2.0 and s.wait_p50 == 0.1
    assert s.spawn_success_rate == 0.75
    assert stats.summarize(stats.Samples()).spawn_success_rate is None
