"""Fixtures shared by the client and CLI tests: a real server on a free loopback port, and an
httpx client bound in-process to the app. Their conftests import them (pytest finds fixtures by
name in a conftest's namespace)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from apitools import controller_class, make_config

from corral.api import create_app
from corral.api.server import BackgroundServer
from corral.config import CorralConfig


@pytest.fixture
def config() -> CorralConfig:
    return make_config()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    """A controller and its API served by uvicorn in a thread (one per test module: every test
    gives back what it takes)."""
    with BackgroundServer(make_config(), factory=controller_class().create) as running:
        yield running


@pytest.fixture
async def asgi(config: CorralConfig) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client bound in-process to the app (no sockets)."""
    ctl: Any = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            yield http
    finally:
        await ctl.stop()
