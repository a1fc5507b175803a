"""Fixtures for the in-process API tests: a controller on the memory store, the app, clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from apitools import controller_class, make_config

from corral.api import create_app
from corral.config import CorralConfig


@pytest.fixture
def config() -> CorralConfig:
    return make_config()


@pytest.fixture
async def controller(config: CorralConfig) -> AsyncIterator[Any]:
    ctl = await controller_class().create(config)
    await ctl.start()
    try:
        yield ctl
    finally:
        await ctl.stop()


@pytest.fixture
async def http(controller: Any, config: CorralConfig) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(controller, config)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as client:
        yield client
