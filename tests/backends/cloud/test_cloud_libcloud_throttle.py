"""libcloud's EC2 driver throttled by a fault-injecting proxy in front of moto (issue 13): 503
RequestLimitExceeded answers back off, pause the account's bucket and are retried; a storm of
spawns under throttling leaves exactly one instance per VM, and none after the terminations.

Each test names the breakage it catches.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import PollStatus
from corral.backends.cloud.libcloud import LibcloudBackend
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import FaultProxy, MotoServer, live_instances
from .libcloudsim import fix_moto_namespace
from .test_libcloud import ec2_driver_options

pytestmark = pytest.mark.usefixtures("cleanup")


@pytest.fixture(autouse=True)
def _moto_xml(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_moto_namespace(monkeypatch)  # see libcloudsim: moto's namespace lacks a trailing slash


def _backend(proxy: FaultProxy, namespace: str, **over: Any) -> LibcloudBackend:
    raw = ec2_driver_options(proxy.port, namespace, **over)
    backend = load_backend("libcloud", raw, pool="p")
    assert isinstance(backend, LibcloudBackend)
    return backend


async def test_throttled_calls_back_off_and_are_retried(
    proxy: FaultProxy, moto: MotoServer, namespace: str
) -> None:
    """Breakage caught: a 503 RequestLimitExceeded failing the spawn instead of being retried,
    a retry without pausing the account's bucket, or a retried create making a second node."""
    backend = _backend(proxy, namespace)
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    proxy.set(throttle=4)
    try:
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
        assert proxy.traffic.throttled == 4
        assert backend.limiter.bucket._paused_until > 0  # the whole account slowed down
        assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}
        proxy.set(throttle=3, throttle_actions=frozenset({"TerminateInstances"}))
        await guard.terminate(handle)
        assert live_instances(moto.url, namespace=namespace) == {}
        assert proxy.traffic.throttled == 7
    finally:
        await backend.aclose()


async def test_a_throttled_storm_leaks_nothing(
    proxy: FaultProxy, moto: MotoServer, namespace: str
) -> None:
    """Eight spawns while the first six requests are throttled and two creates lose their answer
    (fewer throttles in a row than max_attempts: each call gets through).

    Breakage caught: a throttled or lost create retried into a second node (a leak), a spawn
    failed by throttling, a terminate that misses a node."""
    backend = _backend(proxy, namespace)
    guard = GuardedBackend(backend, call_timeout=60, max_concurrency=16, poll_interval=0.02)
    proxy.set(throttle=6, lose_answer=2)
    try:
        handles = await asyncio.gather(
            *(guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(8))
        )
        results = await asyncio.gather(*(guard.wait_up(h, 60) for h in handles))
        assert all(r.status is PollStatus.UP for r in results), results
        assert proxy.traffic.throttled == 6 and proxy.traffic.lost == 2
        live = live_instances(moto.url, namespace=namespace)
        assert sorted(live) == sorted(h.name for h in handles)
        assert all(len(ids) == 1 for ids in live.values()), live  # lost creates were adopted
        await asyncio.gather(*(guard.terminate(h) for h in handles))
        assert live_instances(moto.url, namespace=namespace) == {}
    finally:
        await backend.aclose()


async def test_endless_throttling_fails_clearly(
    proxy: FaultProxy, moto: MotoServer, namespace: str
) -> None:
    """Breakage caught: retrying for ever, or an error that does not say it was throttled."""
    backend = _backend(proxy, namespace, max_attempts=3)
    proxy.set(throttle=1000)
    try:
        with pytest.raises(exceptions.BackendError, match="throttled") as info:
            await backend.spawn(spec("p-000001"))
        assert "3 attempt" in info.value.message
        assert live_instances(moto.url, namespace=namespace) == {}
    finally:
        await backend.aclose()
