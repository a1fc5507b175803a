"""The server's start-up freezes what it built and makes full collections rare (issue 8 item 3):
a full collection under a burst stalled the loop 25-110 ms each, several times a second."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from corral.api import server


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_start_up_objects_are_frozen_and_full_collections_rare(restored_gc: None) -> None:
    young, middle, _ = gc.get_threshold()
    gc.unfreeze()
    server.freeze_startup_objects()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (young, middle, server.FULL_COLLECTION_EVERY)
    assert server.FULL_COLLECTION_EVERY >= 100, "a full collection every few 100k allocations"
