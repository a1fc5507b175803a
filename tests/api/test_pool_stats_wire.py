"""The pool statistics the API answers with (issue 14: wasted spawns reported)."""

from __future__ import annotations

from corral.api import convert
from corral.pools import model


def test_wasted_spawns_reach_the_wire() -> None:
    """Fails when the API's pool status drops the wasted spawns the controller counts (the
    field missing from ``wire.PoolStats`` or not copied by ``convert.pool``): preallocation
    that spawns for demand that goes away would then be invisible to operators."""
    record = model.PoolStatus(
        name="p",
        backend="fake",
        tags=(),
        max=5,
        max_starting=5,
        min_ready=1,
        stats=model.PoolStats(spawn_attempts=9, wasted_spawns=4),
    )
    answer = convert.pool(record)
    assert answer.stats.wasted_spawns == 4
    assert answer.model_dump(mode="json")["stats"]["wasted_spawns"] == 4
