"""Quotas of cloud pools and accounts (issue 13): admission stops at each limit, before any API
call, and resumes after a terminate; sizes come from the cloud; bad quotas are named.

Each test names the breakage it catches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.backends import load_backend, validate_options
from corral.backends.base import Handle, PollStatus
from corral.backends.cloud.ec2 import EC2Backend
from corral.backends.cloud.libcloud import LibcloudBackend
from corral.backends.cloud.quota import QuotaLedger, QuotaOptions, Usage, check_quota
from corral.backends.guard import GuardedBackend

from ..conftest import spec
from .cloudsim import MotoServer, live_instances
from .conftest import ec2_options, make_ec2
from .libcloudsim import fix_moto_namespace

pytestmark = pytest.mark.usefixtures("cleanup")

T3_MICRO = Usage(1, 2, 1024)
"""What moto's DescribeInstanceTypes says of t3.micro (the default instance type)."""


def _guard(backend: Any) -> GuardedBackend:
    return GuardedBackend(backend, call_timeout=30.0, poll_interval=0.02)


# --- the pure check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "committed", "words"),
    [
        ({"instances": 2}, Usage(2, 0, 0), "instances 2 committed + 1 requested > 2"),
        ({"vcpus": 5}, Usage(1, 4, 0), "vcpus 4 committed + 2 requested > 5"),
        ({"memory_mib": 2048}, Usage(1, 0, 1025), "memory_mib 1025 committed"),
    ],
)
def test_each_limit_refuses_with_its_numbers(
    limit: dict[str, int], committed: Usage, words: str
) -> None:
    """Breakage caught: a limit that is not checked, or checked with ``>=`` (off by one)."""
    quota = QuotaOptions(**limit)  # type: ignore[arg-type]
    with pytest.raises(exceptions.CapacityExceeded, match=words.replace("+", r"\+")):
        check_quota(quota, committed, T3_MICRO, "pool p")
    check_quota(quota, committed - T3_MICRO, T3_MICRO, "pool p")  # one less: fits exactly


def test_ledger_refusal_changes_nothing_and_release_frees() -> None:
    """Breakage caught: a refused admission counted anyway, a repeat counted twice."""
    ledger = QuotaLedger(QuotaOptions(instances=2), "pool p")
    ledger.admit("a", T3_MICRO)
    ledger.admit("a", T3_MICRO)
    ledger.admit("b", T3_MICRO)
    with pytest.raises(exceptions.CapacityExceeded):
        ledger.admit("c", T3_MICRO)
    assert len(ledger) == 2 and "c" not in ledger
    ledger.release("a")
    ledger.release("unknown")
    ledger.admit("c", T3_MICRO)
    assert ledger.committed == Usage(2, 4, 2048)


@pytest.mark.parametrize(
    ("quota", "words"),
    [
        ({}, "at least one of instances, vcpus, memory_mib"),
        ({"instances": 0}, r"quota\.instances"),
        ({"vcpus": -1}, r"quota\.vcpus"),
        ({"instances": 1, "cores": 4}, r"quota\.cores: unknown option"),
        ({"instances": 1, "scope": "region"}, r"quota\.scope"),
        ({"instances": "3"}, r"quota\.instances"),
    ],
)
def test_bad_quota_is_a_config_error_naming_the_key(quota: dict[str, Any], words: str) -> None:
    """Breakage caught: an empty or mistyped quota accepted (admission would silently be off)."""
    with pytest.raises(exceptions.ConfigError, match=words):
        validate_options("ec2", {**ec2_options("http://127.0.0.1:1", "ami-1"), "quota": quota})


def test_pools_sharing_an_account_quota_must_agree() -> None:
    """Breakage caught: the first pool's limits silently winning over the second's."""
    base = ec2_options("http://127.0.0.1:1", "ami-1", account="acct")
    load_backend("ec2", {**base, "quota": {"instances": 4, "scope": "account"}}, pool="a")
    with pytest.raises(exceptions.ConfigError, match="same limits"):
        load_backend("ec2", {**base, "quota": {"instances": 5, "scope": "account"}}, pool="b")


# --- EC2 against moto ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "limit", [{"instances": 2}, {"vcpus": 5}, {"memory_mib": 2500}], ids=lambda d: next(iter(d))
)
async def test_ec2_admission_stops_at_each_quota_and_resumes_after_a_terminate(
    moto: MotoServer, ami: str, namespace: str, limit: dict[str, int]
) -> None:
    """Each limit admits exactly two t3.micro (2 vCPUs, 1024 MiB, from DescribeInstanceTypes).

    Breakage caught: the guard not consulting the backend's admission (a third instance made),
    a refusal that still calls RunInstances, a terminate that does not give the share back (the
    fourth spawn refused), sizes not read from the cloud (vcpus/memory limits never bite)."""
    backend = make_ec2(moto.url, ami, namespace=namespace, quota=limit)
    guard = _guard(backend)
    try:
        first = await guard.spawn(spec("p-000001", id_in_pool=1))
        await guard.spawn(spec("p-000002", id_in_pool=2))
        with pytest.raises(exceptions.CapacityExceeded, match=next(iter(limit))):
            await guard.spawn(spec("p-000003", id_in_pool=3))
        assert backend.calls["run_instances"] == 2
        assert set(live_instances(moto.url, namespace=namespace)) == {"p-000001", "p-000002"}
        await guard.terminate(first)
        handle = await guard.spawn(spec("p-000003", id_in_pool=3))
        assert (await guard.wait_up(handle, 30)).status is PollStatus.UP
        assert backend.calls["describe_instance_types"] <= 1  # once per process and type
    finally:
        await backend.aclose()


async def test_an_account_quota_is_shared_by_its_pools(
    moto: MotoServer, ami: str, namespace: str
) -> None:
    """Breakage caught: each pool counting only its own instances against an account quota."""
    opts = {"account": namespace, "quota": {"instances": 3, "scope": "account"}}
    a = make_ec2(moto.url, ami, pool="a", namespace=namespace, **opts)
    b = make_ec2(moto.url, ami, pool="b", namespace=namespace, **opts)
    ga, gb = _guard(a), _guard(b)
    try:
        await ga.spawn(spec("a-000001", pool="a"))
        await ga.spawn(spec("a-000002", pool="a"))
        kept = await gb.spawn(spec("b-000001", pool="b"))
        with pytest.raises(exceptions.CapacityExceeded, match="account"):
            await gb.spawn(spec("b-000002", pool="b"))
        with pytest.raises(exceptions.CapacityExceeded):
            await ga.spawn(spec("a-000003", pool="a"))
        await gb.terminate(kept)
        await ga.spawn(spec("a-000003", pool="a"))
    finally:
        await a.aclose()
        await b.aclose()


async def test_recommitted_vms_count_after_a_restart(
    moto: MotoServer, ami: str, namespace: str
) -> None:
    """Breakage caught: a restarted controller forgetting the VMs that run (quota over-used)."""
    backend = make_ec2(moto.url, ami, namespace=namespace, quota={"instances": 2})
    guard = _guard(backend)
    try:
        guard.recommit(spec("p-000001"))
        guard.recommit(spec("p-000002"))
        with pytest.raises(exceptions.CapacityExceeded):
            await guard.spawn(spec("p-000003"))
        await guard.terminate(Handle("p-000002"))
        await guard.spawn(spec("p-000003"))
    finally:
        await backend.aclose()


async def test_unknown_instance_type_is_named(moto: MotoServer, ami: str, namespace: str) -> None:
    """Breakage caught: an unsized instance type admitted as size zero."""
    backend = make_ec2(
        moto.url, ami, namespace=namespace, quota={"vcpus": 8}, instance_type="zz9.nonesuch"
    )
    try:
        with pytest.raises(exceptions.CorralError, match=r"zz9\.nonesuch|InvalidInstanceType"):
            await _guard(backend).spawn(spec("p-000001"))
        assert backend.calls["run_instances"] == 0
    finally:
        await backend.aclose()


# --- libcloud ------------------------------------------------------------------------------


async def test_libcloud_sizes_carry_ram_and_vcpus(
    moto: MotoServer, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """libcloud's EC2 driver on moto: t3.micro's 1024 MiB and 2 vCPUs (its size table).

    Breakage caught: a libcloud quota ignoring the size (memory/vCPU limits never bite)."""
    fix_moto_namespace(monkeypatch)
    from .test_libcloud import ec2_driver_options

    raw = ec2_driver_options(moto.port, namespace, quota={"vcpus": 4})
    backend = load_backend("libcloud", raw, pool="p", base_dir=Path())
    assert isinstance(backend, LibcloudBackend)
    guard = _guard(backend)
    try:
        assert await backend.vm_usage() == T3_MICRO
        first = await guard.spawn(spec("p-000001"))
        await guard.spawn(spec("p-000002"))
        with pytest.raises(exceptions.CapacityExceeded, match="vcpus 4 committed"):
            await guard.spawn(spec("p-000003"))
        await guard.terminate(first)
        await guard.spawn(spec("p-000003"))
        assert backend.calls["create_node"] == 3
    finally:
        await backend.aclose()


async def test_libcloud_size_without_vcpus_needs_an_override(
    namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dummy driver's sizes give RAM but no vCPUs. Breakage caught: a vCPU quota admitted
    against a size of zero vCPUs (it would never bite)."""
    monkeypatch.setenv("CORRAL_DUMMY_KEY", "0")
    from .test_libcloud import dummy_options

    bad = load_backend("libcloud", dummy_options(namespace, size="2", quota={"vcpus": 4}), pool="p")
    good = load_backend(
        "libcloud",
        dummy_options(namespace, size="2", quota={"vcpus": 4, "vm_vcpus": 2}, account="o"),
        pool="q",
    )
    try:
        with pytest.raises(exceptions.ConfigError, match="vm_vcpus"):
            await _guard(bad).spawn(spec("p-000001"))
        assert isinstance(good, LibcloudBackend)
        assert await good.vm_usage() == Usage(1, 2, 512)
    finally:
        await bad.aclose()
        await good.aclose()


def test_quota_free_backend_admits_everything() -> None:
    """Breakage caught: a backend without a quota or capacity getting an admission anyway."""
    backend = load_backend("ec2", ec2_options("http://127.0.0.1:1", "ami-1"), pool="p")
    assert isinstance(backend, EC2Backend)
    assert backend.admission() is None and _guard(backend).admission is None
