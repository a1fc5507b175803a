"""Backend-layer figures (not a test: run ``python tests/backends/bench_backends.py``).

Prints, each as the median of a few runs:
1. guard overhead per call (fake backend ``poll``), in microseconds;
2. fake scale: 10,000 spawns, then 1,000 VMs with 1 s boots spawned at once and awaited with
   ``wait_up`` — ideal time (1 s) over measured time;
3. script throughput, resalloc's workload at the backend level: ``new`` = the example ``new.sh``
   with a 0.1 s boot, ``delete`` = ``true``, 200 VMs spawned and terminated with 50 processes at
   most — VMs/s and per-spawn latency p50/p90/max.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from corral.backends import load_backend
from corral.backends.base import Handle, PollStatus, VMSpec
from corral.backends.guard import GuardedBackend
from corral.backends.script import example_options

RUNS = 3


def spec(i: int) -> VMSpec:
    return VMSpec(f"vm-{i}", "bench", i, {"memory_mib": 512, "vcpus": 1})


async def guard_overhead() -> float:
    guard = GuardedBackend(load_backend("fake", {}, pool="bench"))
    handle = await guard.spawn(spec(0))
    n = 20_000
    started = time.perf_counter()
    for _ in range(n):
        await guard.poll(handle)
    guarded = (time.perf_counter() - started) / n
    started = time.perf_counter()
    for _ in range(n):
        await guard.backend.poll(handle)
    raw = (time.perf_counter() - started) / n
    return (guarded - raw) * 1e6


async def fake_scale() -> tuple[float, float]:
    backend = load_backend("fake", {"spawn_latency": 1.0}, pool="bench")
    guard = GuardedBackend(backend, max_concurrency=100, poll_interval=1.0)
    started = time.perf_counter()
    await asyncio.gather(*(guard.spawn(spec(i)) for i in range(10_000)))
    spawn_10k = time.perf_counter() - started
    backend2 = load_backend("fake", {"spawn_latency": 1.0}, pool="bench")
    guard2 = GuardedBackend(backend2, max_concurrency=100, poll_interval=1.0)

    async def one(i: int) -> None:
        handle = await guard2.spawn(spec(i))
        result = await guard2.wait_up(handle, timeout=30)
        assert result.status is PollStatus.UP

    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(1000)))
    efficiency = 1.0 / (time.perf_counter() - started)
    return spawn_10k, efficiency


async def script_throughput() -> tuple[float, float, float, float]:
    with tempfile.TemporaryDirectory() as folder:
        options = example_options(Path(folder) / "vms", boot_seconds=0.1)
        options["delete"] = ["true"]
        options["max_processes"] = 50
        guard = GuardedBackend(
            load_backend("script", options, pool="bench"), max_concurrency=50, call_timeout=30
        )
        latencies: list[float] = []

        async def one(i: int) -> None:
            started = time.perf_counter()
            handle = await guard.spawn(spec(i))
            latencies.append(time.perf_counter() - started)
            await guard.terminate(Handle(handle.name))

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(200)))
        elapsed = time.perf_counter() - started
        latencies.sort()
        return (
            200 / elapsed,
            latencies[len(latencies) // 2],
            latencies[int(len(latencies) * 0.9)],
            latencies[-1],
        )


async def main() -> None:
    overhead = statistics.median([await guard_overhead() for _ in range(RUNS)])
    scale = [await fake_scale() for _ in range(RUNS)]
    script = [await script_throughput() for _ in range(RUNS)]
    print(f"guard overhead per call:            {overhead:8.1f} us")
    print(f"fake: 10,000 spawns:                {statistics.median(s for s, _ in scale):8.3f} s")
    print(f"fake: 1,000 x 1 s boots, efficiency: {statistics.median(e for _, e in scale):7.3f}")
    med = [statistics.median(run[k] for run in script) for k in range(4)]
    print(f"script: 200 spawn+delete (0.1 s new): {med[0]:7.1f} VMs/s")
    print(f"script: spawn latency p50/p90/max:    {med[1]:.3f} / {med[2]:.3f} / {med[3]:.3f} s")


if __name__ == "__main__":
    asyncio.run(main())
