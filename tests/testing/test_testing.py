from __future__ import annotations

import pytest

from corral import testing
from corral.backends.base import PollStatus, VMSpec


def test_manual_clock_moves_only_forward() -> None:
    clock = testing.ManualClock(10.0)
    assert clock() == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    with pytest.raises(ValueError, match="only moves forward"):
        clock.advance(-1)
    assert clock() == 12.5


async def test_fake_backend_and_memory_store_work_out_of_the_box() -> None:
    backend = testing.fake_backend(spawn_latency=0.0)
    handle = await backend.spawn(VMSpec(name="t-1", pool="test", id_in_pool=1, template={}))
    assert (await backend.poll(handle)).status is PollStatus.UP
    assert [h.name for h in await backend.list()] == ["t-1"]
    store = testing.memory_store()
    assert store.url.startswith("memory://")
    await store.close()
