"""Fencing tokens on libcloud nodes (issue 11): libcloud's EC2 driver against moto.

Breakages these catch: a create without the fence in the node's metadata, a terminate that
destroys a node whose recorded token is newer than the caller's, a survivor that does not record
its token first, ``identify: name`` (no room for a token) claiming to fence.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Capability, Fence, Handle
from corral.backends.cloud import tags as cloud_tags
from corral.backends.cloud.libcloud import LibcloudBackend
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import MotoServer, ec2_client, live_instances
from .libcloudsim import fix_moto_namespace
from .test_libcloud import dummy_options, ec2_driver_options

A1 = Fence(3, "host-a#1")
A2 = Fence(5, "host-a#1")
B = Fence(8, "host-b#1")


@pytest.fixture(scope="module", autouse=True)
def _empty_moto(moto_server: MotoServer) -> None:
    moto_server.reset()  # libcloud's list_nodes reads every instance (see test_libcloud.py)


@pytest.fixture(autouse=True)
def _libcloud_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fix_moto_namespace(monkeypatch)
    monkeypatch.setenv("CORRAL_DUMMY_KEY", "0")
    # libcloud numbers CreateTags' parameters from 0 (``ResourceId.0``), which AWS accepts and
    # moto does not: the same request numbered from 1, for moto's sake
    from libcloud.compute.drivers import ec2 as libcloud_ec2

    def create_tags(self: Any, resource: Any, tags: dict[str, str]) -> bool:
        params = {"Action": "CreateTags", "ResourceId.1": resource.id}
        for i, (key, value) in enumerate(tags.items(), start=1):
            params[f"Tag.{i}.Key"], params[f"Tag.{i}.Value"] = key, value
        res = self.connection.request(self.path, params=params).object
        return bool(self._get_boolean(res))

    monkeypatch.setattr(libcloud_ec2.BaseEC2NodeDriver, "ex_create_tags", create_tags)
    yield


def _host(moto: MotoServer, namespace: str) -> GuardedBackend:
    backend = load_backend("libcloud", ec2_driver_options(moto.port, namespace), pool="p")
    assert isinstance(backend, LibcloudBackend)
    return GuardedBackend(backend, call_timeout=30.0, poll_interval=0.02)


def _tags(url: str, instance_id: str) -> dict[str, str]:
    answer = ec2_client(url).describe_instances(InstanceIds=[instance_id])
    inst = answer["Reservations"][0]["Instances"][0]
    return {t["Key"]: t["Value"] for t in inst.get("Tags", [])}


async def test_a_stale_holder_is_refused_and_the_survivor_acts(
    moto: MotoServer, namespace: str
) -> None:
    host_a, host_b = _host(moto, namespace), _host(moto, namespace)
    try:
        assert host_a.has(Capability.FENCING)
        handle = await host_a.spawn(spec("p-000001"), fence=A1)
        tags = _tags(moto.url, handle.ref)
        assert tags[cloud_tags.FENCE] == "3" and tags[cloud_tags.FENCE_HOLDER] == "host-a#1"
        backend_b = host_b.backend
        assert isinstance(backend_b, LibcloudBackend)
        nodes = await backend_b._nodes("p-000001")
        await backend_b._fence("p-000001", "terminate", nodes, B)  # B takes over: records first
        assert _tags(moto.url, handle.ref)[cloud_tags.FENCE] == "8"
        with pytest.raises(exceptions.StaleFence):
            await host_a.terminate_until_confirmed(handle, attempts=3, fence=A2)
        alive = live_instances(moto.url, namespace=namespace)
        assert handle.ref in alive.get("p-000001", [])
        await host_b.terminate(Handle.from_json(handle.to_json()), fence=B)
        assert "p-000001" not in live_instances(moto.url, namespace=namespace)
    finally:
        await host_a.aclose()
        await host_b.aclose()


async def test_identify_by_name_does_not_fence(namespace: str) -> None:
    backend = load_backend("libcloud", dummy_options(namespace, identify="name"), pool="p")
    guard = GuardedBackend(backend, call_timeout=10.0)
    try:
        assert not guard.has(Capability.FENCING)
        handle = await guard.spawn(spec("p-000001"), fence=B)
        await guard.terminate(handle, fence=A1)  # nothing recorded, nothing checked
    finally:
        await guard.aclose()
