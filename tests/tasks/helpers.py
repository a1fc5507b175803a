"""Small helpers for the engine tests: steps lists and waiting on conditions with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from corral.tasks import Step


def steps(*specs: str) -> list[Step]:
    """``steps("make a", "boom", "hold b")`` → Step list (the word after the name is ``name``)."""
    out = []
    for spec in specs:
        name, _, arg = spec.partition(" ")
        out.append(Step(name, {"name": arg} if arg else {}))
    return out


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.002)


async def entered(event: asyncio.Event, timeout: float = 10.0) -> None:
    """Wait for ``event`` with a deadline."""
    await asyncio.wait_for(event.wait(), timeout)
