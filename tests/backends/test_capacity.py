"""Host capacity admission (vdsm's memory commit): the pure check, the ledger, and the guard."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Capability, CapacityOptions
from corral.backends.capacity import CapacityLedger, Demand, check_admission, demand_of
from corral.backends.fake import FakeBackend
from corral.backends.guard import GuardedBackend

from .conftest import spec

HOST = CapacityOptions(memory_mib=4096, vcpus=4, overhead_mib=128)


def test_demand_includes_the_per_vm_overhead() -> None:
    assert demand_of({"memory_mib": 1024, "vcpus": 2}, HOST) == Demand(1152, 2)


def test_exact_fit_is_admitted() -> None:
    check_admission(HOST, Demand(2048, 2), Demand(2048, 2))


def test_memory_overflow_is_refused_with_the_numbers() -> None:
    with pytest.raises(exceptions.CapacityExceeded, match=r"3000 MiB committed \+ 1152 MiB"):
        check_admission(HOST, Demand(3000, 1), Demand(1152, 1))


def test_vcpu_overflow_is_refused() -> None:
    with pytest.raises(exceptions.CapacityExceeded, match="vcpus: 3 committed"):
        check_admission(HOST, Demand(100, 3), Demand(100, 2))


@pytest.mark.parametrize(
    "template",
    [{}, {"memory_mib": 512}, {"memory_mib": "512", "vcpus": 1}, {"memory_mib": 0, "vcpus": 1}],
)
def test_template_without_sizes_is_a_config_error(template: dict[str, object]) -> None:
    with pytest.raises(exceptions.ConfigError, match="template"):
        demand_of(template, HOST)


def test_ledger_commits_releases_and_ignores_repeats() -> None:
    ledger = CapacityLedger(HOST)
    small = {"memory_mib": 1024, "vcpus": 1}
    ledger.admit("a", small)
    ledger.admit("a", small)  # a retried spawn commits nothing more
    ledger.admit("b", small)
    ledger.admit("c", small)
    assert ledger.committed == Demand(3456, 3) and len(ledger) == 3
    with pytest.raises(exceptions.CapacityExceeded):
        ledger.admit("d", small)
    assert "d" not in ledger and ledger.committed == Demand(3456, 3)  # refusal changes nothing
    ledger.release("b")
    ledger.release("unknown")
    ledger.admit("d", small)
    assert ledger.free == Demand(4096 - 3456, 1)


def test_recommit_counts_existing_vms_without_refusing() -> None:
    ledger = CapacityLedger(HOST)
    for name in "abcd":
        ledger.recommit(name, {"memory_mib": 1024, "vcpus": 1})
    assert ledger.free.memory_mib < 0  # over-committed by what already runs
    with pytest.raises(exceptions.CapacityExceeded):
        ledger.admit("e", {"memory_mib": 1, "vcpus": 1})


@settings(max_examples=60)
@given(
    st.lists(
        st.tuples(st.booleans(), st.integers(0, 7), st.integers(1, 3000), st.integers(1, 3)),
        max_size=60,
    )
)
def test_admitted_vms_never_exceed_the_capacity(ops: list[tuple[bool, int, int, int]]) -> None:
    ledger = CapacityLedger(HOST)
    for admit, index, memory, vcpus in ops:
        name = f"vm-{index}"
        if admit:
            try:
                ledger.admit(name, {"memory_mib": memory, "vcpus": vcpus})
            except exceptions.CapacityExceeded:
                pass
        else:
            ledger.release(name)
        assert 0 <= ledger.committed.memory_mib <= HOST.memory_mib
        assert 0 <= ledger.committed.vcpus <= HOST.vcpus


async def test_guard_refuses_a_spawn_that_does_not_fit(tmp_path: Path) -> None:
    capacity = {"memory_mib": 2048, "vcpus": 8, "overhead_mib": 0}
    backend = load_backend("fake", {"capacity": capacity}, pool="p", base_dir=tmp_path)
    assert isinstance(backend, FakeBackend)
    assert Capability.CAPACITY in backend.capabilities
    guard = GuardedBackend(backend)
    first = await guard.spawn(spec("vm-1", memory_mib=1024))
    await guard.spawn(spec("vm-2", memory_mib=1024))
    with pytest.raises(exceptions.CapacityExceeded):
        await guard.spawn(spec("vm-3", memory_mib=1024))
    assert backend.calls["spawn"] == 2  # the refused spawn never reached the backend
    await guard.terminate(first)
    await guard.spawn(spec("vm-3", memory_mib=1024))
    assert guard.capacity is not None and guard.capacity.committed == Demand(2048, 2)


async def test_guard_recommits_existing_vms(tmp_path: Path) -> None:
    capacity = {"memory_mib": 1024, "vcpus": 8}
    guard = GuardedBackend(load_backend("fake", {"capacity": capacity}, pool="p"))
    guard.recommit(spec("survivor", memory_mib=1024))
    with pytest.raises(exceptions.CapacityExceeded):
        await guard.spawn(spec("vm-2", memory_mib=512))


def test_capacity_options_are_validated() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"capacity\.memory_mib"):
        load_backend("fake", {"capacity": {"memory_mib": 0, "vcpus": 1}}, pool="p")
    with pytest.raises(exceptions.ConfigError, match=r"capacity\.cpus: unknown option"):
        load_backend("fake", {"capacity": {"memory_mib": 1, "vcpus": 1, "cpus": 2}}, pool="p")
