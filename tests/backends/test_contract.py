"""The backend contract, run against every implementation (STYLE 5).

Each implementation is a parametrised fixture; a test that needs a capability the implementation
lacks is skipped with the reason, and a separate test checks that calling it raises
``CapabilityMissing`` instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import (
    Backend,
    Capability,
    Fence,
    Handle,
    PollStatus,
    is_valid_address,
)
from corral.backends.guard import GuardedBackend
from corral.backends.script import example_options

from .conftest import spec


def _fake(tmp_path: Path) -> Backend:
    options = {"spawn_latency": [0.005, 0.02], "seed": 7, "state_file": "fake.json"}
    return load_backend("fake", options, pool="p", base_dir=tmp_path)


def _fake_minimal(tmp_path: Path) -> Backend:
    options = {"spawn_latency": 0.005, "capabilities": []}
    return load_backend("fake", options, pool="p", base_dir=tmp_path)


def _script(tmp_path: Path) -> Backend:
    return load_backend("script", example_options(tmp_path / "vms"), pool="p", base_dir=tmp_path)


def _script_minimal(tmp_path: Path) -> Backend:
    full = example_options(tmp_path / "vms")
    options = {"new": full["new"], "delete": full["delete"]}
    return load_backend("script", options, pool="p", base_dir=tmp_path)


def _static(tmp_path: Path) -> Backend:
    machines = [{"name": f"m{i}", "address": f"127.0.0.{i}"} for i in range(1, 11)]
    options = {"machines": machines, "cleanup": ["true"], "livecheck": ["true"]}
    return load_backend("static", options, pool="p", base_dir=tmp_path)


def _static_minimal(tmp_path: Path) -> Backend:
    machines = [{"name": f"m{i}", "address": f"127.0.0.{i}"} for i in range(1, 11)]
    return load_backend("static", {"machines": machines}, pool="p", base_dir=tmp_path)


IMPLEMENTATIONS: dict[str, Callable[[Path], Backend]] = {
    "fake": _fake,
    "fake-minimal": _fake_minimal,
    "script": _script,
    "script-minimal": _script_minimal,
    "static": _static,
    "static-minimal": _static_minimal,
}
PERSISTENT = {"fake", "script", "script-minimal", "static", "static-minimal"}
"""Implementations whose inventory outlives the backend object (a state file, the VM files)."""


@pytest.fixture(params=sorted(IMPLEMENTATIONS))
def implementation(request: pytest.FixtureRequest) -> str:
    """The name of each backend implementation in turn."""
    return str(request.param)


@pytest.fixture
async def backend(implementation: str, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh backend of the implementation, closed after the test."""
    instance = IMPLEMENTATIONS[implementation](tmp_path)
    yield instance
    await instance.aclose()


@pytest.fixture
def guarded(backend: Backend) -> GuardedBackend:
    """The backend behind the guard, polling quickly."""
    return GuardedBackend(backend, call_timeout=10.0, poll_interval=0.01)


def need(backend: Backend, capability: Capability) -> None:
    """Skip, visibly, a test that needs a capability the backend lacks."""
    if capability not in backend.capabilities:
        pytest.skip(f"{backend.type_name} backend lacks the {capability.value} capability")


async def up(guarded: GuardedBackend, name: str, id_in_pool: int = 0) -> Handle:
    handle = await guarded.spawn(spec(name, id_in_pool=id_in_pool))
    result = await guarded.wait_up(handle, timeout=5.0)
    assert result.status is PollStatus.UP, result
    return handle


async def test_spawned_vm_comes_up_with_a_valid_address(guarded: GuardedBackend) -> None:
    handle = await guarded.spawn(spec("vm-1"))
    assert handle.name == "vm-1"
    result = await guarded.wait_up(handle, timeout=5.0)
    assert result.status is PollStatus.UP
    assert result.address is not None and is_valid_address(result.address)


async def test_handle_survives_json_round_trip(guarded: GuardedBackend) -> None:
    handle = await up(guarded, "vm-1")
    restored = Handle.from_json(handle.to_json())
    assert restored == handle
    assert (await guarded.poll(restored)).status is PollStatus.UP
    await guarded.terminate(restored)


async def test_terminate_is_idempotent(guarded: GuardedBackend) -> None:
    handle = await up(guarded, "vm-1")
    await guarded.terminate(handle)
    await guarded.terminate(handle)
    await guarded.terminate(Handle("never-existed"))


async def test_list_shows_exactly_the_living_vms(guarded: GuardedBackend, backend: Backend) -> None:
    need(backend, Capability.LIST)
    assert await guarded.list() == []
    handles = [await up(guarded, f"vm-{i}", i) for i in range(3)]
    assert {h.name for h in await guarded.list()} == {"vm-0", "vm-1", "vm-2"}
    await guarded.terminate(handles[1])
    assert {h.name for h in await guarded.list()} == {"vm-0", "vm-2"}


async def test_livecheck_tells_alive_from_terminated(
    guarded: GuardedBackend, backend: Backend
) -> None:
    need(backend, Capability.LIVECHECK)
    handle = await up(guarded, "vm-1")
    assert await guarded.livecheck(handle) is True
    await guarded.terminate(handle)
    assert await guarded.livecheck(handle) is False


async def test_release_keeps_the_vm_usable(guarded: GuardedBackend, backend: Backend) -> None:
    need(backend, Capability.RELEASE)
    handle = await up(guarded, "vm-1")
    await guarded.release(handle)
    assert (await guarded.poll(handle)).status is PollStatus.UP
    if Capability.LIVECHECK in backend.capabilities:
        assert await guarded.livecheck(handle) is True


@pytest.mark.parametrize("capability", [Capability.LIVECHECK, Capability.LIST, Capability.RELEASE])
async def test_missing_capability_raises(
    guarded: GuardedBackend, backend: Backend, capability: Capability
) -> None:
    if capability in backend.capabilities:
        pytest.skip(f"{backend.type_name} backend has {capability.value}")
    handle = Handle("vm-1")
    calls = {
        Capability.LIVECHECK: lambda: backend.livecheck(handle),
        Capability.LIST: backend.list,
        Capability.RELEASE: lambda: backend.release(handle),
    }
    with pytest.raises(exceptions.CapabilityMissing):
        await calls[capability]()  # the backend itself refuses...
    guarded_calls = {
        Capability.LIVECHECK: lambda: guarded.livecheck(handle),
        Capability.LIST: guarded.list,
        Capability.RELEASE: lambda: guarded.release(handle),
    }
    with pytest.raises(exceptions.CapabilityMissing):
        await guarded_calls[capability]()  # ...and so does the guard, before calling it


async def test_a_fencing_backend_refuses_an_older_fence(
    guarded: GuardedBackend, backend: Backend
) -> None:
    """FENCING (``FencedBackend``): the spawn's fence is recorded on the machine; a terminate
    under an older token is refused (``StaleFence``, not retried) and leaves the VM up; one
    under a newer token terminates it. Breakage caught: a fencing backend that checks nothing."""
    need(backend, Capability.FENCING)
    handle = await guarded.spawn(spec("vm-1"), fence=Fence(5, "host-a#1"))
    assert (await guarded.wait_up(handle, timeout=10.0)).status is PollStatus.UP
    with pytest.raises(exceptions.StaleFence):
        await guarded.terminate_until_confirmed(handle, attempts=3, fence=Fence(4, "host-b#1"))
    assert (await guarded.poll(handle)).status is PollStatus.UP
    await guarded.terminate(handle, fence=Fence(6, "host-a#1"))
    if Capability.LIST in backend.capabilities:
        assert "vm-1" not in {h.name for h in await guarded.list()}


async def test_terminate_right_after_spawn_leaves_nothing(
    guarded: GuardedBackend, backend: Backend
) -> None:
    need(backend, Capability.LIST)
    handle = await guarded.spawn(spec("vm-1"))  # possibly still booting
    await guarded.terminate(handle)
    assert await guarded.list() == []
    if Capability.LIVECHECK in backend.capabilities:
        assert await guarded.livecheck(handle) is False


async def test_concurrent_spawns_all_come_up_distinctly(
    guarded: GuardedBackend, backend: Backend
) -> None:
    handles = await asyncio.gather(*(up(guarded, f"vm-{i}", i) for i in range(8)))
    assert len({h.name for h in handles}) == 8
    if Capability.LIST in backend.capabilities:
        assert {h.name for h in await guarded.list()} == {f"vm-{i}" for i in range(8)}
    await asyncio.gather(*(guarded.terminate(h) for h in handles))
    if Capability.LIST in backend.capabilities:
        assert await guarded.list() == []


async def test_mandatory_operations_are_counted(guarded: GuardedBackend) -> None:
    handle = await up(guarded, "vm-1")
    await guarded.terminate(handle)
    stats = guarded.stats()
    assert stats["spawn"].calls == 1 and stats["spawn"].failures == 0
    assert stats["poll"].calls >= 1
    assert stats["terminate"].calls == 1


async def test_inventory_survives_a_new_backend_object(
    guarded: GuardedBackend, backend: Backend, implementation: str, tmp_path: Path
) -> None:
    if implementation not in PERSISTENT:
        pytest.skip(f"{implementation} keeps its VMs in memory only")
    handles = [await up(guarded, f"vm-{i}", i) for i in range(3)]
    await backend.aclose()
    again = GuardedBackend(IMPLEMENTATIONS[implementation](tmp_path), poll_interval=0.01)
    try:
        if again.has(Capability.LIST):
            assert {h.name for h in await again.list()} == {"vm-0", "vm-1", "vm-2"}
        restored = Handle.from_json(handles[0].to_json())
        assert (await again.poll(restored)).status is PollStatus.UP
        await again.terminate(restored)
        if again.has(Capability.LIST):
            assert {h.name for h in await again.list()} == {"vm-1", "vm-2"}
    finally:
        await again.aclose()
