"""Fencing tokens on EC2 instances (issue 11), against moto's EC2 server.

Breakages these catch: a spawn whose RunInstances does not carry the fence tags
(``ec2-fence-not-tagged``), a terminate that terminates an instance whose recorded token is newer
than the caller's (``ec2-fence-unchecked``), a survivor that terminates without re-tagging
first, a fenced terminate that costs calls per VM (a describe or a CreateTags each) on the path
where one host spawns and terminates.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral import exceptions
from corral.backends.base import Capability, Fence, Handle
from corral.backends.cloud import ec2_model
from corral.backends.cloud import tags as cloud_tags
from corral.backends.cloud.ec2 import EC2Backend
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import FaultProxy, MotoServer, ec2_client, live_instances
from .conftest import make_ec2

A1 = Fence(3, "host-a#1")
A2 = Fence(5, "host-a#1")
B = Fence(8, "host-b#1")


def _guard(backend: EC2Backend) -> GuardedBackend:
    return GuardedBackend(backend, call_timeout=30.0, max_concurrency=64, poll_interval=0.02)


def _tags(url: str, instance_id: str) -> dict[str, str]:
    answer = ec2_client(url).describe_instances(InstanceIds=[instance_id])
    inst = answer["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


def _alive(url: str, namespace: str) -> set[str]:
    return {i for ids in live_instances(url, namespace=namespace).values() for i in ids}


async def test_spawn_tags_the_instance_with_the_fence_in_its_create(
    proxy: FaultProxy, ec2_proxied: EC2Backend, moto: MotoServer
) -> None:
    guard = _guard(ec2_proxied)
    assert guard.has(Capability.FENCING)
    handle = await guard.spawn(spec("p-000001"), fence=A1)
    assert proxy.traffic.calls["RunInstances"] == 1
    assert proxy.traffic.calls.get("CreateTags", 0) == 0  # in the create, not after it
    tags = _tags(moto.url, handle.ref)
    assert tags[cloud_tags.FENCE] == "3" and tags[cloud_tags.FENCE_HOLDER] == "host-a#1"
    unfenced = await guard.spawn(spec("p-000002"))
    assert cloud_tags.FENCE not in _tags(moto.url, unfenced.ref)
    await guard.terminate(handle, fence=A2)
    await guard.terminate(unfenced)


async def test_a_stale_holder_is_refused_and_the_survivor_acts(
    moto: MotoServer, ami: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Host A spawned the VM under token 3 and was paused; host B took over its lock (token 8),
    re-tags the instance with its token and... is slow to terminate it. A wakes and terminates
    under token 5: refused, logged, the instance lives. B's terminate then goes through."""
    host_a = _guard(make_ec2(moto.url, ami, namespace=namespace))
    host_b = _guard(make_ec2(moto.url, ami, namespace=namespace))
    try:
        handle = await host_a.spawn(spec("p-000001"), fence=A1)
        assert isinstance(host_b.backend, EC2Backend)
        instance = (await host_b.backend._targeted.submit(ec2_model.Ask("p-000001"))).by_id(
            handle.ref
        )
        assert instance is not None
        await host_b.backend._fence("p-000001", "terminate", [instance], B)  # B records first
        assert _tags(moto.url, handle.ref)[cloud_tags.FENCE] == "8"
        with caplog.at_level(logging.WARNING, logger="corral.backends.fencing"):
            with pytest.raises(exceptions.StaleFence) as caught:
                await host_a.terminate_until_confirmed(handle, attempts=5, fence=A2)
        assert "token 5 of host-a#1 is older than the machine's 8 of host-b#1" in str(caught.value)
        assert any("refused" in r.getMessage() for r in caplog.records)
        assert host_a.stats()["terminate"].calls == 1  # never retried
        assert handle.ref in _alive(moto.url, namespace)
        with pytest.raises(exceptions.StaleFence):  # nor may A adopt it by spawning again
            await host_a.spawn(spec("p-000001"), fence=A2)
        await host_b.terminate(Handle.from_json(handle.to_json()), fence=B)
        assert handle.ref not in _alive(moto.url, namespace)
    finally:
        await host_a.aclose()
        await host_b.aclose()


async def test_a_survivor_retags_before_it_terminates(
    moto: MotoServer, ami: str, namespace: str
) -> None:
    """B's terminate of A's instance records B's token (one CreateTags) before the terminate."""
    host_a = _guard(make_ec2(moto.url, ami, namespace=namespace))
    host_b = make_ec2(moto.url, ami, namespace=namespace)
    order: list[str] = []
    original = host_b._api

    async def api(operation: str, **kwargs: object) -> dict[str, object]:
        order.append(operation)
        if operation == "terminate_instances":
            ids = kwargs["InstanceIds"]
            assert isinstance(ids, list)
            assert all(_tags(moto.url, i)[cloud_tags.FENCE] == "8" for i in ids)
        return await original(operation, **kwargs)

    host_b._api = api  # type: ignore[method-assign]
    try:
        handle = await host_a.spawn(spec("p-000001"), fence=A1)
        await _guard(host_b).terminate(Handle.from_json(handle.to_json()), fence=B)
        assert order.index("create_tags") < order.index("terminate_instances")
        assert handle.ref not in _alive(moto.url, namespace)
    finally:
        await host_a.aclose()
        await host_b.aclose()


async def test_fenced_terminates_of_one_host_share_describes_and_tag_nothing(
    proxy: FaultProxy, ec2_proxied: EC2Backend
) -> None:
    """One host spawns and terminates 12 VMs under newer tokens of its own: no CreateTags, the
    describes shared (not one per VM), the terminations batched."""
    guard = _guard(ec2_proxied)
    handles = await asyncio.gather(
        *(
            guard.spawn(spec(f"p-{i:06d}", id_in_pool=i), fence=Fence(i + 1, "h#1"))
            for i in range(12)
        )
    )
    before = dict(proxy.traffic.calls)
    await asyncio.gather(
        *(guard.terminate(h, fence=Fence(100 + i, "h#1")) for i, h in enumerate(handles))
    )
    after = proxy.traffic.calls
    assert after.get("CreateTags", 0) == 0
    assert after["DescribeInstances"] - before.get("DescribeInstances", 0) <= 2
    assert after["TerminateInstances"] - before.get("TerminateInstances", 0) <= 2
    assert not _alive_in(ec2_proxied)


def _alive_in(backend: EC2Backend) -> set[str]:
    url = backend.opts.endpoint_url
    assert url is not None
    return _alive(url, backend.opts.namespace)


def test_fence_tags_round_trip_and_reserve_their_places() -> None:
    fence = Fence(12, "build-01#3")
    assert cloud_tags.fence_of(cloud_tags.fence_tags(fence)) == fence
    assert cloud_tags.fence_of({cloud_tags.FENCE: "x", cloud_tags.FENCE_HOLDER: "h"}) is None
    assert cloud_tags.fence_of({}) is None
    with pytest.raises(exceptions.ConfigError, match="at most 43 tags"):
        cloud_tags.check_user_tags({f"k{i}": "v" for i in range(44)})
