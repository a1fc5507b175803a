"""The guard: timeouts, the concurrency bound, error translation, counters, polling and retries."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import ClassVar

import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Backend, BackendOptions, Handle, PollResult, PollStatus, VMSpec
from corral.backends.fake import FakeBackend
from corral.backends.guard import (
    GuardedBackend,
    Operation,
    backoff_delay,
    reserved_slots,
    retry_with_backoff,
)

from .conftest import spec, wait_for


class Scripted(Backend):
    """A backend whose operations do what the test tells them, to drive the guard."""

    type_name: ClassVar[str] = "scripted"

    def __init__(self) -> None:
        super().__init__(BackendOptions(), pool="p")
        self.gate = asyncio.Event()
        self.running = 0
        self.peak = 0
        self.spawn_error: BaseException | None = None
        self.terminate_failures = 0
        self.terminate_calls = 0
        self.poll_results: list[PollResult] = []

    async def spawn(self, spec: VMSpec) -> Handle:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await self.gate.wait()
            if self.spawn_error is not None:
                raise self.spawn_error
            return Handle(spec.name)
        finally:
            self.running -= 1

    async def poll(self, handle: Handle) -> PollResult:
        return self.poll_results.pop(0) if self.poll_results else PollResult(PollStatus.PENDING)

    async def terminate(self, handle: Handle) -> None:
        self.terminate_calls += 1
        if self.terminate_calls <= self.terminate_failures:
            raise ConnectionResetError("peer went away")


def fake(tmp_path: Path, **options: object) -> FakeBackend:
    backend = load_backend("fake", options, pool="p", base_dir=tmp_path)
    assert isinstance(backend, FakeBackend)
    return backend


async def test_hanging_call_times_out_and_is_counted(tmp_path: Path) -> None:
    guard = GuardedBackend(
        fake(tmp_path, hang_rate=1.0, hang_operations=["poll"]), call_timeout=0.05
    )
    with pytest.raises(exceptions.BackendTimeout, match=r"no answer within 0\.05 s"):
        await guard.poll(Handle("vm-1"))
    stats = guard.stats()[Operation.POLL]
    assert (stats.calls, stats.failures, stats.timeouts) == (1, 1, 1)
    assert guard.in_flight == 0


async def test_per_operation_timeout_overrides_the_default(tmp_path: Path) -> None:
    backend = fake(tmp_path, hang_rate=1.0, hang_operations=["terminate"])
    guard = GuardedBackend(backend, call_timeout=30.0, timeouts={"terminate": 0.05})
    assert guard.timeout_for("terminate") == 0.05 and guard.timeout_for("spawn") == 30.0
    with pytest.raises(exceptions.BackendTimeout):
        await guard.terminate(Handle("vm-1"))


async def test_concurrency_bound_holds() -> None:
    backend = Scripted()
    guard = GuardedBackend(backend, max_concurrency=3, max_spawns=3)
    spawns = [asyncio.create_task(guard.spawn(spec(f"vm-{i}"))) for i in range(20)]
    await wait_for(lambda: backend.running == 3, what="three spawns running")
    await asyncio.sleep(0.02)  # give any unbounded call the chance to start; none must
    assert backend.running == 3 and guard.in_flight == 3
    backend.gate.set()
    handles = await asyncio.gather(*spawns)
    assert len(handles) == 20 and backend.peak == 3 and guard.in_flight == 0


async def test_slow_spawns_leave_slots_for_other_operations() -> None:
    backend = Scripted()
    guard = GuardedBackend(backend, max_concurrency=4)
    assert guard.max_spawns == 3
    spawns = [asyncio.create_task(guard.spawn(spec(f"vm-{i}"))) for i in range(10)]
    await wait_for(lambda: backend.running == 3, what="three spawns running")
    await asyncio.wait_for(guard.terminate(Handle("vm-old")), timeout=5)  # not stuck behind them
    assert backend.terminate_calls == 1 and backend.running == 3
    backend.gate.set()
    assert len(await asyncio.gather(*spawns)) == 10 and backend.peak == 3


def test_reserved_slots_are_a_quarter_between_one_and_eight() -> None:
    assert [reserved_slots(n) for n in (1, 2, 4, 8, 16, 32, 58, 108)] == [0, 1, 1, 2, 4, 8, 8, 8]
    assert GuardedBackend(Scripted(), max_concurrency=58).max_spawns == 50


async def test_waiting_for_a_slot_is_not_part_of_the_timeout() -> None:
    backend = Scripted()
    guard = GuardedBackend(backend, max_concurrency=1, call_timeout=0.2)
    first = asyncio.create_task(guard.spawn(spec("vm-1")))
    second = asyncio.create_task(guard.spawn(spec("vm-2")))
    await wait_for(lambda: backend.running == 1)
    await asyncio.sleep(0.15)
    backend.gate.set()
    assert [h.name for h in await asyncio.gather(first, second)] == ["vm-1", "vm-2"]


async def test_third_party_errors_become_backend_errors() -> None:
    backend = Scripted()
    backend.gate.set()
    backend.spawn_error = ValueError("quota exceeded in region")
    guard = GuardedBackend(backend)
    with pytest.raises(exceptions.BackendError, match="ValueError: quota exceeded") as info:
        await guard.spawn(spec("vm-1"))
    assert isinstance(info.value.__cause__, ValueError)
    assert type(info.value) is exceptions.BackendError
    assert guard.stats()[Operation.SPAWN].failures == 1


async def test_a_backends_own_timeout_error_is_not_a_guard_timeout() -> None:
    backend = Scripted()
    backend.gate.set()
    backend.spawn_error = TimeoutError("socket timed out")
    guard = GuardedBackend(backend)
    with pytest.raises(exceptions.BackendError) as info:
        await guard.spawn(spec("vm-1"))
    assert type(info.value) is exceptions.BackendError
    assert guard.stats()[Operation.SPAWN].timeouts == 0


async def test_backend_errors_pass_through_unchanged() -> None:
    backend = Scripted()
    backend.gate.set()
    original = exceptions.BackendTimeout("the cloud API timed out")
    backend.spawn_error = original
    guard = GuardedBackend(backend)
    with pytest.raises(exceptions.BackendTimeout) as info:
        await guard.spawn(spec("vm-1"))
    assert info.value is original
    assert guard.stats()[Operation.SPAWN].timeouts == 1


async def test_cancellation_is_not_translated_and_frees_the_slot() -> None:
    backend = Scripted()
    guard = GuardedBackend(backend, max_concurrency=1)
    task = asyncio.create_task(guard.spawn(spec("vm-1")))
    await wait_for(lambda: backend.running == 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert guard.in_flight == 0
    backend.gate.set()
    assert (await guard.spawn(spec("vm-2"))).name == "vm-2"


async def test_spawn_returning_a_foreign_handle_is_an_error() -> None:
    class Wrong(Scripted):
        async def spawn(self, spec: VMSpec) -> Handle:
            return Handle("someone-else")

    guard = GuardedBackend(Wrong())
    with pytest.raises(exceptions.BackendError, match="not a Handle with the VM's name"):
        await guard.spawn(spec("vm-1"))


async def test_garbage_address_becomes_a_failed_poll(tmp_path: Path) -> None:
    backend = fake(tmp_path, garbage_rate=1.0)
    guard = GuardedBackend(backend)
    handle = await guard.spawn(spec("vm-1"))
    result = await guard.poll(handle)
    assert result.status is PollStatus.FAILED and "invalid address" in (result.reason or "")
    assert guard.stats()[Operation.POLL].failures == 1


async def test_wait_up_polls_through_transient_errors(tmp_path: Path) -> None:
    backend = fake(tmp_path, spawn_latency=0.02, poll_failure_rate=0.5, seed=3)
    guard = GuardedBackend(backend, poll_interval=0.005)
    handle = await guard.spawn(spec("vm-1"))
    result = await guard.wait_up(handle, timeout=5.0)
    assert result.status is PollStatus.UP
    assert guard.stats()[Operation.POLL].failures >= 1  # seed 3 fails some polls


async def test_wait_up_returns_a_failed_boot(tmp_path: Path) -> None:
    guard = GuardedBackend(fake(tmp_path, boot_failure_rate=1.0), poll_interval=0.005)
    handle = await guard.spawn(spec("vm-1"))
    result = await guard.wait_up(handle, timeout=5.0)
    assert result.status is PollStatus.FAILED and "did not boot" in (result.reason or "")


async def test_wait_up_times_out_naming_the_last_error(tmp_path: Path) -> None:
    guard = GuardedBackend(fake(tmp_path, poll_failure_rate=1.0), poll_interval=0.005)
    handle = await guard.spawn(spec("vm-1"))
    with pytest.raises(exceptions.BackendTimeout, match=r"not up within 0\.05 s.*injected poll"):
        await guard.wait_up(handle, timeout=0.05)


async def test_wait_up_follows_the_backends_retry_hint(tmp_path: Path) -> None:
    guard = GuardedBackend(fake(tmp_path, spawn_latency=0.05), poll_interval=60.0)
    handle = await guard.spawn(spec("vm-1"))
    result = await guard.wait_up(handle, timeout=5.0)  # would take 60 s without the hint
    assert result.status is PollStatus.UP
    assert guard.stats()[Operation.POLL].calls <= 4


async def test_terminate_retries_until_confirmed() -> None:
    backend = Scripted()
    backend.terminate_failures = 3
    guard = GuardedBackend(backend)
    retries: list[int] = []
    tries = await guard.terminate_until_confirmed(
        Handle("vm-1"), base_delay=0.001, on_retry=lambda n, exc: retries.append(n)
    )
    assert tries == 4 and retries == [1, 2, 3]
    stats = guard.stats()[Operation.TERMINATE]
    assert (stats.calls, stats.failures) == (4, 3)


async def test_terminate_gives_up_after_the_attempts() -> None:
    backend = Scripted()
    backend.terminate_failures = 5
    guard = GuardedBackend(backend)
    with pytest.raises(exceptions.BackendError, match="peer went away"):
        await guard.terminate_until_confirmed(Handle("vm-1"), attempts=2, base_delay=0.001)
    assert backend.terminate_calls == 2


async def test_retry_does_not_retry_what_cannot_succeed() -> None:
    calls = 0

    async def refuse() -> None:
        nonlocal calls
        calls += 1
        raise exceptions.CapacityExceeded("full")

    with pytest.raises(exceptions.CapacityExceeded):
        await retry_with_backoff(refuse, attempts=None, base_delay=0.001)
    assert calls == 1


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    delays = [backoff_delay(n, base=1.0, factor=2.0, maximum=10.0, jitter=1.0) for n in range(1, 7)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert backoff_delay(3, base=1.0, factor=2.0, maximum=10.0, jitter=0.0) == 2.0
    rng = random.Random(1)
    for _ in range(100):
        assert 2.0 <= backoff_delay(3, base=1, factor=2, maximum=10, jitter=rng.random()) <= 4.0
    with pytest.raises(exceptions.InvalidInput):
        backoff_delay(0, base=1.0, factor=2.0, maximum=10.0, jitter=0.5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"call_timeout": 0},
        {"max_concurrency": 0},
        {"poll_interval": -1},
        {"timeouts": {"spwan": 1.0}},
        {"timeouts": {"spawn": 0}},
        {"max_concurrency": 2, "max_spawns": 3},
        {"max_spawns": 0},
    ],
)
def test_bad_guard_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(exceptions.InvalidInput):
        GuardedBackend(Scripted(), **kwargs)  # type: ignore[arg-type]


async def test_blocking_calls_run_in_the_bounded_pool() -> None:
    import threading
    import time

    backend = Scripted()
    loop_thread = threading.get_ident()
    seen: set[int] = set()

    def blocking(seconds: float) -> int:
        seen.add(threading.get_ident())
        time.sleep(seconds)
        return threading.get_ident()

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.005)

    tick_task = asyncio.create_task(ticker())
    results = await asyncio.gather(*(backend.run_blocking(blocking, 0.05) for _ in range(8)))
    tick_task.cancel()
    assert loop_thread not in results
    assert len(seen) <= backend.options.blocking_workers  # 4 threads at most
    assert ticks >= 3  # the loop kept running while the calls blocked
    await backend.aclose()
