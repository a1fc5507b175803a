"""Benchmark of issue 13: the EC2 backend's API calls, and its rate limit under load.

Run: ``python bench/cloud.py`` (``--vms 100`` for a shorter run). It starts moto's EC2 server on
127.0.0.1 with a counting proxy in front (tests/backends/cloud/cloudsim.py) and measures:

1. API calls per spawn and per terminate (20 VMs, no rate limit to speak of): target 1
   RunInstances per spawn and <= 1 DescribeInstances per poll interval per pool (describes are
   shared by every VM polled), terminations batched;
2. ``--vms`` VMs (default 500) each spawned, polled until up and terminated, all at once, through
   the guard, with a rate limit of ``--rate`` calls/s (default 10, burst 5): every call is checked
   at the wire against the limit (in any window of w seconds, at most burst + rate * w calls, with
   ``--jitter`` seconds of tolerance for the proxy's own timestamps), and the elapsed time is
   compared with what the limit allows for the calls made ((calls - burst) / rate): target within
   10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corral.backends import load_backend  # noqa: E402
from corral.backends.base import Handle, PollStatus, VMSpec  # noqa: E402
from corral.backends.cloud import ratelimit  # noqa: E402
from corral.backends.cloud.ec2 import EC2Backend  # noqa: E402
from corral.backends.guard import GuardedBackend  # noqa: E402
from tests.backends.cloud.cloudsim import (  # noqa: E402
    AMI,
    FAKE_CREDENTIALS,
    REGION,
    FaultProxy,
    MotoServer,
    ProxyProcess,
)

DESCRIBE_INTERVAL = 1.0


def _backend(url: str, namespace: str, rate: float, burst: float) -> EC2Backend:
    options: dict[str, Any] = {
        "region": REGION,
        "endpoint_url": url,
        "image_id": AMI,
        "namespace": namespace,
        "describe_interval": DESCRIBE_INTERVAL,
        "rate": rate,
        "burst": burst,
        "account": namespace,
        "blocking_workers": 32,  # RunInstances takes ~1 s on a busy moto (and on AWS)
    }
    backend = load_backend("ec2", options, pool="bench")
    assert isinstance(backend, EC2Backend)
    return backend


def _guard(backend: EC2Backend, n: int) -> GuardedBackend:
    return GuardedBackend(
        backend, call_timeout=3600, max_concurrency=2 * n + 16, max_spawns=n, poll_interval=0.5
    )


def _spec(i: int) -> VMSpec:
    return VMSpec(name=f"bench-{i:06d}", pool="bench", id_in_pool=i, template={})


async def _lifecycle(guard: GuardedBackend, i: int) -> Handle:
    handle = await guard.spawn(_spec(i))
    result = await guard.wait_up(handle, timeout=3600)
    assert result.status is PollStatus.UP, result
    await guard.terminate(handle)
    return handle


async def calls_per_operation(proxy: FaultProxy) -> dict[str, float]:
    """Phase 1: calls per spawn (until up) and per terminate, for 20 VMs at once."""
    n = 20
    backend = _backend(proxy.url, "calls", rate=1000, burst=100)
    guard = _guard(backend, n)
    try:
        await guard.list()  # warm up the client
        start = dict(proxy.traffic.calls)
        t0 = time.monotonic()
        handles = await asyncio.gather(*(guard.spawn(_spec(i)) for i in range(n)))
        results = await asyncio.gather(*(guard.wait_up(h, timeout=120) for h in handles))
        assert all(r.status is PollStatus.UP for r in results)
        up_seconds = time.monotonic() - t0
        mid = dict(proxy.traffic.calls)
        await asyncio.gather(*(guard.terminate(h) for h in handles))
        end = dict(proxy.traffic.calls)
    finally:
        await guard.aclose()

    def delta(a: dict[str, int], b: dict[str, int], action: str) -> int:
        return b.get(action, 0) - a.get(action, 0)

    return {
        "vms": n,
        "run_instances_per_spawn": delta(start, mid, "RunInstances") / n,
        "describes_during_spawn": delta(start, mid, "DescribeInstances"),
        "poll_intervals_during_spawn": up_seconds / DESCRIBE_INTERVAL,
        "describes_per_terminate": delta(mid, end, "DescribeInstances") / n,
        "terminate_calls_per_terminate": delta(mid, end, "TerminateInstances") / n,
    }


def _time_sdk_calls(backend: EC2Backend) -> dict[str, list[float]]:
    """Record how long each SDK call takes in its thread (the cloud's latency, gate excluded)."""
    latencies: dict[str, list[float]] = {}
    client = backend._client_sync()
    for operation in ("run_instances", "describe_instances", "terminate_instances"):
        original = getattr(client, operation)

        def timed(*args: Any, _original: Any = original, _op: str = operation, **kw: Any) -> Any:
            started = time.monotonic()
            try:
                return _original(*args, **kw)
            finally:
                latencies.setdefault(_op, []).append(time.monotonic() - started)

        setattr(client, operation, timed)
    return latencies


def worst_window(times: list[float], rate: float, burst: float, jitter: float) -> float:
    """The largest excess of calls over ``burst + rate * (w + jitter)`` in any window (<= 0: ok)."""
    worst = float("-inf")
    times = sorted(times)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            allowed = burst + rate * (times[j] - start + jitter)
            worst = max(worst, (j - i + 1) - allowed)
            if times[j] - start > 5:
                break
    return worst


async def rate_limited_storm(
    server: MotoServer, n: int, rate: float, burst: float, jitter: float
) -> dict[str, float]:
    """Phase 2: ``n`` VMs spawned, polled up and terminated at once under ``rate`` calls/s,
    timed at the wire by a proxy in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        proxy = ProxyProcess(server.port, f"{tmp}/times.json")
        backend = _backend(proxy.url, "storm", rate=rate, burst=burst)
        latencies = _time_sdk_calls(backend)
        guard = _guard(backend, n)
        try:
            await guard.list()  # warm up: a running controller's client has its models loaded
            await asyncio.sleep(1.0)  # the bucket fills again: the run starts from a full bucket
            before = dict(backend.calls)
            t0 = time.monotonic()
            await asyncio.gather(*(_lifecycle(guard, i) for i in range(n)))
            elapsed = time.monotonic() - t0
        finally:
            await guard.aclose()
            wire = proxy.stop()
    times = [t for t, _ in wire if t >= t0]
    creates = latencies.get("run_instances", [])
    mean_create = sum(creates) / len(creates) if creates else 0.0
    calls = len(times)
    allowed = max(0.0, (calls - burst) / rate)
    span = times[-1] - times[0] if times else 0.0
    return {
        "vms": n,
        "calls": calls,
        "run_instances": backend.calls["run_instances"] - before.get("run_instances", 0),
        "describes": backend.calls["describe_instances"] - before.get("describe_instances", 0),
        "terminate_calls": backend.calls["terminate_instances"],
        "elapsed_s": round(elapsed, 2),
        "first_to_last_call_s": round(span, 2),
        "limit_allows_s": round(allowed, 2),
        "ratio_elapsed_over_allowed": round(elapsed / allowed, 3) if allowed else 0.0,
        "worst_window_excess_calls": round(worst_window(times, rate, burst, jitter), 3),
        "mean_run_instances_latency_s": round(mean_create, 3),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "excess_by_jitter": {
            j: round(worst_window(times, rate, burst, j), 3) for j in (0.0, 0.02, 0.05, 0.1)
        },
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--burst", type=float, default=5.0)
    parser.add_argument("--jitter", type=float, default=0.02)
    args = parser.parse_args()
    os.environ.update(FAKE_CREDENTIALS)
    server = MotoServer()
    server.start()
    proxy = FaultProxy(server.port)
    try:
        ratelimit.forget_limiters()
        one = await calls_per_operation(proxy)
        print("1. calls per operation:", one)
        ok1 = one["run_instances_per_spawn"] == 1 and (
            one["describes_during_spawn"] <= one["poll_intervals_during_spawn"] + 1
        )
        print(f"   target 1 create per spawn, <= 1 describe per poll interval: {ok1}")
        two = await rate_limited_storm(server, args.vms, args.rate, args.burst, args.jitter)
        print(f"2. {args.vms} VMs at {args.rate:g} calls/s:", two)
        within = two["ratio_elapsed_over_allowed"] <= 1.10
        never = two["worst_window_excess_calls"] <= 0
        print(f"   limit never exceeded: {never}; time within 10 % of the limit: {within}")
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
