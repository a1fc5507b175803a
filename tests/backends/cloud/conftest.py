"""Fixtures for the cloud backends: one moto EC2 server per session, reset before every test,
fake credentials in the environment, a fault-injecting proxy, and fresh rate limiters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from corral.backends import load_backend
from corral.backends.cloud import quota, ratelimit
from corral.backends.cloud.ec2 import EC2Backend

from .cloudsim import (
    AMI,
    FAKE_CREDENTIALS,
    REGION,
    FaultProxy,
    MotoServer,
    ec2_client,
    live_instances,
)

pytest.importorskip("boto3")
pytest.importorskip("moto")


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's EC2 server for the whole session."""
    server = MotoServer()
    server.start()
    # moto's first DescribeInstances loads its EC2 models (seconds on a loaded machine): done
    # here with boto3's default timeouts, not in a test whose short read_timeout it would trip
    try:
        with pytest.MonkeyPatch.context() as env:
            for key, value in FAKE_CREDENTIALS.items():
                env.setenv(key, value)
            live_instances(server.url)
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def cloud_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fake AWS credentials and no shared rate limiters or quota ledgers left over from another
    test."""
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    ratelimit.forget_limiters()
    quota.forget_ledgers()
    yield
    ratelimit.forget_limiters()
    quota.forget_ledgers()


@pytest.fixture
def moto(moto_server: MotoServer) -> MotoServer:
    """The moto server (not emptied: each test has its own namespace, see ``namespace``)."""
    return moto_server


@pytest.fixture
def ami() -> str:
    """An AMI id the server knows."""
    return AMI


@pytest.fixture
def namespace() -> str:
    """A corral namespace of this test alone: the tests share one moto server (a reset costs
    about a second), and a backend only ever sees its own namespace's instances."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def proxy(moto: MotoServer) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the (emptied) moto server."""
    p = FaultProxy(moto.port)
    yield p
    p.close()


def ec2_options(url: str, ami: str, **overrides: Any) -> dict[str, Any]:
    """Options of a fast-polling EC2 backend on ``url`` without a meaningful rate limit."""
    return {
        "region": REGION,
        "endpoint_url": url,
        "image_id": ami,
        "describe_interval": 0.05,
        "rate": 1000.0,
        "burst": 100.0,
        "backoff_base": 0.02,
        "backoff_max": 0.2,
        "read_timeout": 5.0,
        "connect_timeout": 2.0,
        **overrides,
    }


def make_ec2(url: str, ami: str, pool: str = "p", **overrides: Any) -> EC2Backend:
    """An EC2 backend through the registry (so the options are validated as in production)."""
    backend = load_backend("ec2", ec2_options(url, ami, **overrides), pool=pool, base_dir=Path())
    assert isinstance(backend, EC2Backend)
    return backend


@pytest.fixture
async def ec2(moto: MotoServer, ami: str, namespace: str) -> AsyncIterator[EC2Backend]:
    """An EC2 backend straight on moto."""
    backend = make_ec2(moto.url, ami, namespace=namespace)
    yield backend
    await backend.aclose()


@pytest.fixture
async def ec2_proxied(proxy: FaultProxy, ami: str, namespace: str) -> AsyncIterator[EC2Backend]:
    """An EC2 backend talking to moto through the fault proxy."""
    backend = make_ec2(proxy.url, ami, namespace=namespace, read_timeout=2.0)
    yield backend
    await backend.aclose()


@pytest.fixture
def cleanup(moto: MotoServer, namespace: str) -> Iterator[None]:
    """Terminate the test's instances at its end: the server is shared by the session, and
    libcloud's ``list_nodes`` reads every instance it has (later tests would slow down)."""
    yield
    ids = [i for ids in live_instances(moto.url, namespace=namespace).values() for i in ids]
    if ids:
        ec2_client(moto.url).terminate_instances(InstanceIds=ids)
