"""Fixtures for the backend suites: backends under test and a deadline-bounded condition wait."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from corral.backends.base import VMSpec

TEMPLATE = {"memory_mib": 512, "vcpus": 1}


def spec(name: str, pool: str = "p", id_in_pool: int = 0, **template: object) -> VMSpec:
    """A VMSpec with a small default template."""
    return VMSpec(name=name, pool=pool, id_in_pool=id_in_pool, template={**TEMPLATE, **template})


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0, what: str = "") -> None:
    """Wait until ``condition()`` holds, failing the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s: {what or condition}")
        await asyncio.sleep(0.005)
