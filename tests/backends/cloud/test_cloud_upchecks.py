"""The EC2 up-checks through the backend and the guard, against moto's server (issue 13):
``status_ok`` waits for DescribeInstanceStatus' two checks, ``ssh`` for a TCP port that answers
on the instance's address (a listener the test opens and closes on that loopback address).

Each test names the breakage it catches.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest

from corral.backends.base import Handle, PollStatus
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import FaultProxy, MotoServer, ec2_client
from .conftest import make_ec2

pytestmark = pytest.mark.usefixtures("cleanup")

POLLS = 5
"""Polls that must all stay pending while the check fails (each after a fresh describe)."""


def _state(url: str, instance_id: str) -> str:
    answer = ec2_client(url).describe_instances(InstanceIds=[instance_id])
    return str(answer["Reservations"][0]["Instances"][0]["State"]["Name"])


async def _pending_polls(guard: GuardedBackend, handle: Handle, interval: float) -> None:
    for _ in range(POLLS):
        result = await guard.poll(handle)
        assert result.status is PollStatus.PENDING, result
        await asyncio.sleep(interval)


async def test_status_ok_waits_for_both_status_checks(
    proxy: FaultProxy, moto: MotoServer, ami: str, namespace: str
) -> None:
    """While DescribeInstanceStatus says ``initializing`` (the proxy rewrites moto's ``ok``),
    a running instance stays pending; once the checks pass it is up.

    Breakage caught: ``status_ok`` treated as ``running`` (up before the checks pass), the
    status never asked (never up), or asked once per VM per poll instead of per round."""
    proxy.set(status_not_ok=True)
    backend = make_ec2(proxy.url, ami, namespace=namespace, up_check="status_ok")
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    try:
        handles = [await guard.spawn(spec(f"p-{i:06d}", id_in_pool=i)) for i in range(3)]
        await asyncio.sleep(0.1)
        for handle in handles:
            await _pending_polls(guard, handle, 0.06)
            assert _state(moto.url, handle.ref) == "running"
        asked = proxy.traffic.calls["DescribeInstanceStatus"]
        assert asked >= 1
        assert asked <= proxy.traffic.calls["DescribeInstances"]  # one per describe round
        proxy.set(status_not_ok=False)
        results = await asyncio.gather(*(guard.wait_up(h, 30) for h in handles))
        assert all(r.status is PollStatus.UP and r.address for r in results), results
    finally:
        await backend.aclose()


@pytest.fixture
def loopback_subnet(moto: MotoServer) -> str:
    """A subnet of 127.0.0.0/24 in moto, so that instances get loopback private addresses
    on which the test can listen (Linux answers on all of 127.0.0.0/8)."""
    client = ec2_client(moto.url)
    vpc = client.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    return str(client.create_subnet(VpcId=vpc, CidrBlock="127.0.0.0/24")["Subnet"]["SubnetId"])


@pytest.fixture
def free_port() -> Iterator[int]:
    """A TCP port nothing listens on (on 127.0.0.1, hence very likely on 127.0.0.0/8)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    yield port


async def test_ssh_waits_for_the_port_to_answer(
    moto: MotoServer, ami: str, namespace: str, loopback_subnet: str, free_port: int
) -> None:
    """A running instance is pending until its address accepts TCP on ``ssh_port``; the test
    opens a listener there, and the VM comes up at that address.

    Breakage caught: ``ssh`` treated as ``running`` (up with nothing listening), the check made
    on another address or port (never up), or a refused connection taken for an answer."""
    backend = make_ec2(
        moto.url,
        ami,
        namespace=namespace,
        up_check="ssh",
        ssh_port=free_port,
        subnet_id=loopback_subnet,
    )
    guard = GuardedBackend(backend, call_timeout=30, poll_interval=0.02)
    try:
        handle = await guard.spawn(spec("p-000001"))
        await asyncio.sleep(0.1)
        await _pending_polls(guard, handle, 0.06)
        answer = ec2_client(moto.url).describe_instances(InstanceIds=[handle.ref])
        inst = answer["Reservations"][0]["Instances"][0]
        assert inst["State"]["Name"] == "running"
        address = str(inst["PrivateIpAddress"])
        assert address.startswith("127.0.0.")
        accepted = 0

        def on_connect(_r: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            accepted += 1
            writer.close()

        server = await asyncio.start_server(on_connect, address, free_port)
        try:
            result = await guard.wait_up(handle, 30)
        finally:
            server.close()
            await server.wait_closed()
        assert (result.status, result.address) == (PollStatus.UP, address)
        assert accepted >= 1
    finally:
        await backend.aclose()
