"""The fake backend: timestamp readiness, seeded fault injection, state file, scale."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Handle, PollStatus
from corral.backends.fake import GARBAGE_ADDRESS, FakeBackend, FakeFault, FakeOptions
from corral.backends.guard import GuardedBackend, Operation
from corral.testing import ManualClock

from .conftest import spec


def fake(
    tmp_path: Path | None = None, clock: ManualClock | None = None, **raw: object
) -> FakeBackend:
    options = FakeOptions.model_validate(raw)
    if clock is None:
        return FakeBackend(options, pool="p", base_dir=tmp_path)
    return FakeBackend(options, pool="p", base_dir=tmp_path, clock=clock)


async def test_vm_comes_up_after_its_latency() -> None:
    clock = ManualClock()
    backend = fake(clock=clock, spawn_latency=[10, 20], seed=1)
    handle = await backend.spawn(spec("vm-1"))
    pending = await backend.poll(handle)
    assert pending.status is PollStatus.PENDING
    assert pending.retry_after is not None and 10 <= pending.retry_after <= 20
    assert await backend.livecheck(handle) is False  # not up yet
    clock.now += pending.retry_after
    up = await backend.poll(handle)
    assert up.status is PollStatus.UP and up.address == "10.0.0.1"
    assert await backend.livecheck(handle) is True


async def test_same_seed_same_faults() -> None:
    async def outcomes(seed: int) -> list[str]:
        backend = fake(seed=seed, spawn_failure_rate=0.3, boot_failure_rate=0.3)
        seen = []
        for i in range(40):
            try:
                handle = await backend.spawn(spec(f"vm-{i}"))
            except FakeFault:
                seen.append("spawn-failed")
                continue
            seen.append((await backend.poll(handle)).status.value)
        return seen

    first, again, other = await outcomes(5), await outcomes(5), await outcomes(6)
    assert first == again and first != other
    assert {"spawn-failed", "failed", "up"} <= set(first)


async def test_spawn_failure_creates_nothing_and_is_translated_by_the_guard() -> None:
    backend = fake(spawn_failure_rate=1.0)
    guard = GuardedBackend(backend)
    with pytest.raises(exceptions.BackendError, match="FakeFault: injected spawn failure") as info:
        await guard.spawn(spec("vm-1"))
    assert isinstance(info.value.__cause__, FakeFault)
    assert await backend.names() == set()


async def test_hanging_spawn_leaves_the_vm_behind_for_the_rollback() -> None:
    backend = fake(hang_rate=1.0, hang_operations=["spawn"])
    guard = GuardedBackend(backend, call_timeout=0.05)
    with pytest.raises(exceptions.BackendTimeout):
        await guard.spawn(spec("vm-1"))
    assert await backend.names() == {"vm-1"}  # created, then hung: rollback must terminate it
    await guard.terminate(Handle("vm-1"))
    assert await backend.names() == set()


async def test_failing_terminate_keeps_the_vm_until_a_retry_succeeds() -> None:
    backend = fake(terminate_failure_rate=0.6, seed=3)  # seed 3: fails 3 times, then succeeds
    guard = GuardedBackend(backend)
    handle = await guard.spawn(spec("vm-1"))
    with pytest.raises(exceptions.BackendError, match="injected terminate failure"):
        await guard.terminate(handle)
    assert await backend.names() == {"vm-1"}
    tries = await guard.terminate_until_confirmed(handle, base_delay=0.001)
    assert tries == 3 and await backend.names() == set()
    assert guard.stats()[Operation.TERMINATE].failures == 3


async def test_garbage_address_is_reported_as_is_by_the_fake() -> None:
    backend = fake(garbage_rate=1.0)
    handle = await backend.spawn(spec("vm-1"))
    assert (await backend.poll(handle)).address == GARBAGE_ADDRESS


async def test_livecheck_failure_rate_and_killed_vms() -> None:
    backend = fake(livecheck_failure_rate=1.0)
    handle = await backend.spawn(spec("vm-1"))
    assert await backend.livecheck(handle) is False
    healthy = fake()
    handle = await healthy.spawn(spec("vm-1"))
    await healthy.kill("vm-1")
    assert await healthy.livecheck(handle) is False
    assert [h.name for h in await healthy.list()] == ["vm-1"]  # dead but still there


async def test_forget_and_inject_simulate_drift() -> None:
    backend = fake()
    await backend.spawn(spec("vm-1"))
    await backend.forget("vm-1")
    await backend.inject("leaked-7")
    assert await backend.names() == {"leaked-7"}
    with pytest.raises(exceptions.VMNotFound):
        await backend.kill("vm-1")


async def test_poll_of_an_unknown_vm_is_failed() -> None:
    result = await fake().poll(Handle("ghost"))
    assert result.status is PollStatus.FAILED and "ghost" in (result.reason or "")


async def test_duplicate_spawn_is_refused() -> None:
    backend = fake()
    await backend.spawn(spec("vm-1"))
    with pytest.raises(FakeFault, match="already exists"):
        await backend.spawn(spec("vm-1"))


async def test_release_of_an_unknown_vm_fails() -> None:
    backend = fake()
    handle = await backend.spawn(spec("vm-1"))
    await backend.release(handle)
    assert backend.vms["vm-1"].releases == 1
    with pytest.raises(FakeFault):
        await backend.release(Handle("ghost"))


async def test_terminate_latency_is_spent(tmp_path: Path) -> None:
    backend = fake(terminate_latency=0.05)
    handle = await backend.spawn(spec("vm-1"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await backend.terminate(handle)
    assert loop.time() - started >= 0.04


async def test_state_file_survives_a_new_process(tmp_path: Path) -> None:
    first = fake(tmp_path, state_file="state/fake.json", spawn_latency=0.01)
    handles = await asyncio.gather(*(first.spawn(spec(f"vm-{i}", id_in_pool=i)) for i in range(5)))
    await first.terminate(handles[0])
    await first.aclose()
    data = json.loads((tmp_path / "state" / "fake.json").read_text())
    assert set(data["vms"]) == {"vm-1", "vm-2", "vm-3", "vm-4"}
    assert not [p for p in (tmp_path / "state").iterdir() if p.name != "fake.json"]  # no temp files
    second = fake(tmp_path, state_file="state/fake.json")
    assert {h.name for h in await second.list()} == {"vm-1", "vm-2", "vm-3", "vm-4"}
    await asyncio.sleep(0.02)
    assert (await second.poll(Handle("vm-4"))).status is PollStatus.UP
    new = await second.spawn(spec("vm-5"))
    assert (await second.poll(new)).address not in {vm.address for vm in first.vms.values()}
    await second.aclose()


async def test_corrupt_state_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "fake.json").write_text("{not json")
    backend = fake(tmp_path, state_file="fake.json")
    with pytest.raises(exceptions.BackendError, match=r"fake state file .* is corrupt"):
        await backend.list()
    await backend.aclose()


async def test_ten_thousand_vms_and_a_thousand_concurrent_spawns() -> None:
    backend = fake(spawn_latency=[0.0, 0.01], seed=1)
    guard = GuardedBackend(backend, max_concurrency=1000, poll_interval=0.005)
    handles = await asyncio.gather(*(guard.spawn(spec(f"vm-{i}")) for i in range(10_000)))
    ups = await asyncio.gather(*(guard.wait_up(h, timeout=10) for h in handles[:1000]))
    assert all(r.status is PollStatus.UP for r in ups)
    assert len(await guard.list()) == 10_000
    assert len({vm.address for vm in backend.vms.values()}) == 10_000


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"spawn_latency": [3, 1]}, "spawn_latency: Value error, must be"),
        ({"spawn_latency": -1}, "spawn_latency"),
        ({"spawn_failure_rate": 1.5}, "spawn_failure_rate: Input should be less than or equal"),
        ({"hang_operations": ["spwan"]}, "unknown operations"),
        ({"capabilities": ["capacity"]}, "declared with the capacity option"),
        ({"capabilities": ["teleport"]}, "capabilities"),
        ({"seeds": 1}, "seeds: unknown option"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, object], message: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=message):
        load_backend("fake", raw, pool="p")


def test_scalar_latency_means_a_fixed_latency() -> None:
    options = FakeOptions.model_validate({"spawn_latency": 2, "terminate_latency": [0.5, 1]})
    assert options.spawn_latency == (2.0, 2.0) and options.terminate_latency == (0.5, 1.0)
