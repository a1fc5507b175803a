"""Helpers for the controller tests: a manual clock, a controller on a fake backend, waiting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from corral.backends import validate_options
from corral.backends.fake import FakeBackend
from corral.config import parse_config
from corral.controller import Controller
from corral.store import Store


def fake_backend(pool: str = "p", **options: Any) -> FakeBackend:
    """A fake backend with the given options (seeded, instant by default)."""
    options.setdefault("seed", 7)
    return FakeBackend(validate_options("fake", options), pool=pool)


@asynccontextmanager
async def controller(
    pool: dict[str, Any] | None = None,
    *,
    fake: FakeBackend | None = None,
    store: Store | None = None,
    store_url: str = "memory://",
    clock: Callable[[], float] = time.time,
    start: bool = True,
    tick: float = 0.05,
) -> AsyncIterator[Controller]:
    """A controller on one pool ``p`` of a fake backend, stopped afterwards."""
    raw: dict[str, Any] = {
        "backend": {"type": "fake"},
        "max": 5,
        "min_ready": 2,
        "poll_interval": 0.01,
        "terminate_timeout": 5,
        "spawn_timeout": 5,
    }
    raw.update(pool or {})
    cfg = parse_config({"store": store_url, "pools": {"p": raw}}, env={})
    backend = fake if fake is not None else fake_backend()
    ctl = await Controller.create(cfg, store=store, backends={"p": backend}, clock=clock, tick=tick)
    try:
        if start:
            await ctl.start()
        yield ctl
    finally:
        await ctl.stop()


async def eventually(
    ctl: Controller, check: Callable[[], Awaitable[bool]], timeout: float = 5.0
) -> None:
    """Wait until ``check()`` holds, re-checking on every event (and every 50 ms)."""
    async with ctl.events.subscribe() as events:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await check():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError("condition not reached in time")
            try:
                await events.get(timeout=min(left, 0.05))
            except TimeoutError:
                pass


async def counts(ctl: Controller, pool: str = "p") -> dict[str, int]:
    """VMs of ``pool`` per state."""
    return dict((await ctl.get_pool(pool)).vms)
