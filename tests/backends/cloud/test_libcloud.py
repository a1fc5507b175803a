"""The libcloud backend: its EC2 driver against moto's server, and the (named) dummy driver.

The backend contract suite runs against both; the tests below cover what is libcloud's own:
options and credentials, the two ways of recognising the pool's nodes, and machines corral
did not create surviving the sweep.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.backends import load_backend, validate_options
from corral.backends.base import Backend, Capability, Handle, PollStatus
from corral.backends.cloud import ratelimit
from corral.backends.cloud.libcloud import LibcloudBackend
from corral.backends.guard import GuardedBackend

from .. import test_contract as contract
from ..conftest import spec
from ..test_contract import *  # noqa: F403 - the contract's tests, collected here again
from .cloudsim import AMI, FAKE_CREDENTIALS, REGION, FaultProxy, MotoServer, live_instances
from .libcloudsim import fix_moto_namespace

SECRET = FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]


def ec2_driver_options(port: int, namespace: str, **over: Any) -> dict[str, Any]:
    """The libcloud backend on libcloud's EC2 driver, pointed at moto."""
    return {
        "driver": "ec2",
        "driver_args": {
            "region": REGION,
            "host": "127.0.0.1",
            "port": port,
            "secure": False,
            "signature_version": "4",
        },
        "key_env": "AWS_ACCESS_KEY_ID",
        "secret_env": "AWS_SECRET_ACCESS_KEY",
        "image": AMI,
        "size": "t3.micro",
        "namespace": namespace,
        "list_interval": 0.05,
        "rate": 1000.0,
        "burst": 100.0,
        "backoff_base": 0.02,
        "backoff_max": 0.2,
        **over,
    }


def dummy_options(namespace: str, **over: Any) -> dict[str, Any]:
    """The libcloud backend on the named dummy driver (keyed by a dummy 'credential')."""
    return {
        "driver": "corral-dummy",
        "key_env": "CORRAL_DUMMY_KEY",
        "image": "i1",
        "size": "s1",
        "namespace": namespace,
        "list_interval": 0.01,
        "rate": 1000.0,
        "burst": 100.0,
        **over,
    }


@pytest.fixture(scope="module", autouse=True)
def _empty_moto(moto_server: MotoServer) -> None:
    """Start from an empty moto server: libcloud's EC2 ``list_nodes`` reads every instance the
    server has (terminated ones included), and the earlier cloud tests leave hundreds, which made
    a describe round outlast these tests' timeouts when run after them."""
    moto_server.reset()


@pytest.fixture(autouse=True)
def _libcloud_env(monkeypatch: pytest.MonkeyPatch) -> None:
    fix_moto_namespace(monkeypatch)
    monkeypatch.setenv("CORRAL_DUMMY_KEY", "0")


@pytest.fixture(params=["libcloud-ec2", "libcloud-dummy"])
def implementation(request: pytest.FixtureRequest) -> str:
    """The libcloud backend on each driver in turn."""
    return str(request.param)


@pytest.fixture
async def backend(
    implementation: str,
    moto: MotoServer,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Backend]:
    """A libcloud backend; on EC2 its inventory lives in moto (persistent)."""

    def factory(_path: Path) -> Backend:
        if implementation == "libcloud-ec2":
            raw = ec2_driver_options(moto.port, namespace)
        else:
            raw = dummy_options(namespace)
        return load_backend("libcloud", raw, pool="p", base_dir=tmp_path)

    monkeypatch.setitem(contract.IMPLEMENTATIONS, implementation, factory)
    monkeypatch.setattr(contract, "PERSISTENT", contract.PERSISTENT | {"libcloud-ec2"})
    instance = factory(tmp_path)
    yield instance
    await instance.aclose()


# --- libcloud's own ------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["key", "secret", "password"])
def test_inline_credentials_are_refused_without_echoing_them(key: str) -> None:
    """Breakage caught: a secret accepted in the config, or quoted in the error chain."""
    for raw in (
        {**dummy_options("ns"), key: SECRET},
        {**dummy_options("ns"), "driver_args": {key: SECRET}},
    ):
        with pytest.raises(exceptions.ConfigError, match="credentials are never read") as info:
            validate_options("libcloud", raw)
        assert SECRET not in f"{info.value} {info.value.__cause__!s}"


def test_credentials_come_from_exactly_one_place() -> None:
    with pytest.raises(exceptions.ConfigError, match="exactly one"):
        validate_options("libcloud", {**dummy_options("ns"), "credentials_file": "c.yaml"})
    with pytest.raises(exceptions.ConfigError, match="exactly one"):
        validate_options("libcloud", {**dummy_options("ns"), "key_env": None})


def test_missing_environment_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_DUMMY_KEY")
    with pytest.raises(exceptions.ConfigError, match="CORRAL_DUMMY_KEY"):
        load_backend("libcloud", dummy_options("ns"), pool="p")


def test_credentials_file(tmp_path: Path) -> None:
    (tmp_path / "creds.yaml").write_text(f"key: '0'\nsecret: {SECRET}\n")
    raw = {**dummy_options("ns"), "key_env": None, "credentials_file": "creds.yaml"}
    backend = load_backend("libcloud", raw, pool="p", base_dir=tmp_path)
    assert isinstance(backend, LibcloudBackend)
    (tmp_path / "bad.yaml").write_text(f"[{SECRET}\n")
    raw["credentials_file"] = "bad.yaml"
    with pytest.raises(exceptions.ConfigError, match="not valid") as info:
        load_backend("libcloud", raw, pool="p", base_dir=tmp_path)
    assert SECRET not in str(info.value)


def test_unknown_driver_is_a_config_error() -> None:
    with pytest.raises(exceptions.ConfigError, match="no-such-cloud"):
        load_backend("libcloud", {**dummy_options("ns"), "driver": "no-such-cloud"}, pool="p")


@pytest.mark.parametrize("identify", ["tags", "name"])
async def test_nodes_corral_did_not_create_survive(identify: str, namespace: str) -> None:
    """The dummy driver starts with dummy-1 and dummy-2. Breakage caught: ``list()`` returning
    them (the sweep would destroy them), or not recognising the pool's own node."""
    backend = load_backend("libcloud", dummy_options(namespace, identify=identify), pool="p")
    guard = GuardedBackend(backend, poll_interval=0.01)
    try:
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, timeout=10)).status is PollStatus.UP
        assert await guard.list() == [handle]
        driver = backend._driver_sync()  # type: ignore[attr-defined]
        names = sorted(n.name for n in driver.list_nodes())
        expected = "p-000001" if identify == "tags" else f"corral-{namespace}-p--p-000001"
        assert names == sorted(["dummy-1", "dummy-2", expected])
        for leaked in await guard.list():  # what the sweep would do with an unknown VM
            await guard.terminate(leaked)
        assert sorted(n.name for n in driver.list_nodes()) == ["dummy-1", "dummy-2"]
    finally:
        await guard.aclose()


async def test_ec2_driver_tags_instances_and_only_lists_them(
    moto: MotoServer, namespace: str
) -> None:
    """Through libcloud's EC2 driver: the instance carries corral's tags (created atomically
    with it by RunInstances' TagSpecification), and terminate leaves nothing."""
    raw = ec2_driver_options(moto.port, namespace, metadata={"team": "builds"})
    backend = load_backend("libcloud", raw, pool="p")
    guard = GuardedBackend(backend, poll_interval=0.01)
    try:
        assert backend.capabilities >= {Capability.LIST, Capability.LIVECHECK}
        handle = await guard.spawn(spec("p-000001"))
        assert (await guard.wait_up(handle, timeout=10)).status is PollStatus.UP
        assert live_instances(moto.url, pool="p", namespace=namespace) == {"p-000001": [handle.ref]}
        await guard.terminate(Handle("p-000001"))  # by name alone, as a rollback does
        assert live_instances(moto.url, pool="p", namespace=namespace) == {}
    finally:
        await guard.aclose()


async def test_a_call_too_late_for_its_slot_is_not_sent_and_asks_for_a_new_one(
    proxy: FaultProxy, moto: MotoServer, namespace: str, cleanup: None
) -> None:
    """Through libcloud's EC2 driver, the limiter finds the look-up's ``list_nodes`` and the
    ``create_node`` late for their cluster slots once each, in the driver connection's last step
    before the request leaves (``pre_connect_hook``, after signing): neither is sent, each takes
    a new slot and goes, at no cost of an attempt (``max_attempts: 1``). Breakages caught: the
    deadline checked only at the gate in the worker thread (a request built late would leave
    late, beside the other hosts' calls of the next slots: no MissedSlot here, and the test
    sees no miss), a late call sent anyway (the proxy would count it twice), a missed slot
    counted as a failed attempt (the spawn fails)."""
    raw = ec2_driver_options(proxy.port, namespace, max_attempts=1)
    backend = load_backend("libcloud", raw, pool="p")
    assert isinstance(backend, LibcloudBackend)
    missed: list[ratelimit.Permit] = []
    check = backend.limiter.check_slot

    def late_once(permit: ratelimit.Permit) -> None:
        if permit.seq not in {p.seq for p in missed}:
            missed.append(permit)
            raise ratelimit.MissedSlot("late (test)")
        check(permit)

    backend.limiter.check_slot = late_once  # type: ignore[method-assign]
    try:
        handle = await backend.spawn(spec("p-000001"))
    finally:
        await backend.aclose()
    assert handle.ref.startswith("i-")
    assert len(missed) == 2  # the look-up's list_nodes and the create, once each
    assert proxy.traffic.calls["RunInstances"] == 1
    assert proxy.traffic.calls["DescribeInstances"] == 1
    assert backend.calls["create_node"] == 1 and backend.calls["list_nodes"] == 1
    assert live_instances(moto.url, namespace=namespace) == {"p-000001": [handle.ref]}


async def test_only_a_driver_calls_first_request_is_held_to_its_slot(
    proxy: FaultProxy, moto: MotoServer, namespace: str
) -> None:
    """A driver call that makes two requests (a listing's second page): the second comes
    after the first's answer, so later than the slot by nature. Breakage caught: checking
    every request of the call against the slot; a second page later than the margin would miss
    the slot on every try and the listing would never end (a missed slot costs no attempt)."""
    raw = ec2_driver_options(proxy.port, namespace)
    backend = load_backend("libcloud", raw, pool="p")
    assert isinstance(backend, LibcloudBackend)
    checked: list[int] = []
    check = backend.limiter.check_slot

    def second_is_late(permit: ratelimit.Permit) -> None:
        checked.append(permit.seq)
        if checked.count(permit.seq) > 1:
            raise ratelimit.MissedSlot("a later page, late (test)")
        check(permit)

    backend.limiter.check_slot = second_is_late  # type: ignore[method-assign]
    driver = backend._driver_sync()
    one_page = driver.list_nodes
    driver.list_nodes = lambda: [*one_page(), *one_page()]  # two requests for one call
    try:
        nodes = await asyncio.wait_for(backend._api("list_nodes"), 30)
    finally:
        await backend.aclose()
    assert isinstance(nodes, list)  # other tests' (terminated) instances may be in it
    assert proxy.traffic.calls["DescribeInstances"] == 2
    assert backend.calls["list_nodes"] == 1
