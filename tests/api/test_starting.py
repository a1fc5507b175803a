"""Liveness before readiness (issue 12): while the controller recovers, ``/healthz`` answers,
``/readyz`` says ``starting`` and everything else is a retryable 503 ``server_starting``.

What it catches: a server that listens only once recovery is over (an orchestrator's liveness
probe kills it during a long recovery), or that lets requests reach a controller still
recovering; a server that never becomes ready, or stays ready-less after a failed start.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from apitools import controller_class, make_config

from corral import exceptions
from corral.api.server import Server, free_port
from corral.client import core
from corral.config import CorralConfig


async def _until(check: Any, what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not in time: {what}")
        await asyncio.sleep(0.02)


async def test_healthz_answers_while_recovering_and_readyz_once_serving() -> None:
    recovered = asyncio.Event()

    async def slow_recovery(config: CorralConfig) -> Any:
        await recovered.wait()  # the controller's recovery and reconciliation, held
        return await controller_class().create(config)

    server = Server(
        make_config(tokens=False),
        port=free_port(),
        factory=slow_recovery,
        install_signal_handlers=False,
    )
    running = asyncio.create_task(server.run())
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:

            async def live() -> bool:
                try:
                    return (await http.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await _until(live, "/healthz answers during recovery")
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["status"] == "starting"
            pools = await http.get("/v1/pools")
            assert pools.status_code == 503
            error = core.error_from(pools.status_code, pools.json())
            assert isinstance(error, exceptions.ServerStarting)
            assert isinstance(error, exceptions.ServerStopping)  # the clients retry it
            assert (await http.head("/healthz")).status_code == 200
            assert not server.started.is_set()
            recovered.set()

            async def serving() -> bool:
                return (await http.get("/readyz")).status_code == 200

            await _until(serving, "/readyz once serving")
            assert server.started.is_set()
            assert (await http.get("/v1/pools")).status_code == 200
    finally:
        server.shutdown()
        await asyncio.wait_for(running, 30)


async def test_a_failed_start_stops_listening_and_raises() -> None:
    async def broken(config: CorralConfig) -> Any:
        raise exceptions.StoreInUse("another corral serves this store")

    server = Server(
        make_config(tokens=False), port=free_port(), factory=broken, install_signal_handlers=False
    )
    with pytest.raises(exceptions.StoreInUse):
        await asyncio.wait_for(server.run(), 30)
    with pytest.raises(httpx.TransportError):
        async with httpx.AsyncClient(base_url=server.url, timeout=2) as http:
            await http.get("/healthz")
