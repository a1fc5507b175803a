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
3. with ``--pg URL`` (a PostgreSQL server; the run makes a fresh database there, migrates it
   and drops it at the end): the same storm split over two "hosts" (two backends, each with its
   own in-process limiter, as two ``corral serve`` processes have) sharing the account's bucket
   row in PostgreSQL: the limit must hold for both together at the wire, and the time stay
   within 10 % of what the limit allows. ``--late-margin inf`` turns the hosts' deadline off
   (a call late for its cluster slot goes anyway: the code before the deadline), to compare.

Phases 2 and 3 also print where the time went: calls per 10 s at the wire, when the last create
went and what came after it (the tail), and a trace of every call's legs in milliseconds: from
its cluster slot to its worker thread's start, from there to botocore's ``before-send`` (the
request built and signed), and from there to the proxy; the slots missed; and the calls of the
worst window (host, action, time in the window, its slot's time relative to the window).

Each phase prints the load average (1, 5, 15 min) before and after it: on a shared machine the
figures are loaded figures.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import math
import os
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corral.backends import load_backend  # noqa: E402
from corral.backends.base import Handle, PollStatus, VMSpec  # noqa: E402
from corral.backends.cloud import ratelimit  # noqa: E402
from corral.backends.cloud.ec2 import EC2Backend  # noqa: E402
from corral.backends.cloud.ratelimit import MissedSlot, Permit  # noqa: E402
from corral.backends.guard import GuardedBackend  # noqa: E402
from tests.backends.cloud.cloudsim import (  # noqa: E402
    AMI,
    FAKE_CREDENTIALS,
    REGION,
    TRACE_HEADER,
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


def latency(samples: dict[str, list[float]] | list[dict[str, list[float]]]) -> dict[str, str]:
    """Mean and max seconds of each SDK call in its thread (the cloud's answer time plus the
    SDK's own work, gate excluded): a describe of hundreds of instances is seconds of XML."""
    merged: dict[str, list[float]] = {}
    for one in samples if isinstance(samples, list) else [samples]:
        for op, values in one.items():
            merged.setdefault(op, []).extend(values)
    return {
        op: f"n={len(v)} mean={sum(v) / len(v):.2f} max={max(v):.2f}"
        for op, v in sorted(merged.items())
        if v
    }


class Tracer:
    """Where each call's time went on its way out: its cluster slot (the permit), its worker
    thread's start, botocore's ``before-send`` (the request is built and signed), and its
    arrival at the proxy (a header tells the proxy which call it is)."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._local = threading.local()
        self._ids = itertools.count()

    def attach(self, backend: EC2Backend, host: str) -> None:
        """Trace every call ``backend`` makes (its ``_invoke``, its client's requests)."""
        original = backend._invoke

        def invoke(operation: str, kwargs: Any, permit: Permit) -> Any:
            record: dict[str, Any] = {
                "id": f"{host}-{next(self._ids)}",
                "host": host,
                "op": operation,
                "due": permit.due if math.isfinite(permit.due) else None,
                "start": time.monotonic(),
            }
            self.calls.append(record)
            self._local.record = record
            try:
                return original(operation, kwargs, permit)
            except MissedSlot:
                record["missed"] = True
                raise
            finally:
                self._local.record = None

        backend._invoke = invoke  # type: ignore[method-assign]
        backend._client_sync().meta.events.register("before-send.ec2", self._before_send)

    def _before_send(self, request: Any, **_: Any) -> None:
        record = getattr(self._local, "record", None)
        if record is not None:
            record["send"] = time.monotonic()
            request.headers[TRACE_HEADER] = record["id"]

    def report(
        self,
        arrived: dict[str, float],
        wire: list[float],
        rate: float,
        burst: float,
        jitter: float,
        margin: float,
    ) -> dict[str, Any]:
        """Percentiles (ms) of each leg, missed slots, and the calls of the worst window."""
        for record in self.calls:
            record["wire"] = arrived.get(record["id"])
        sent = [r for r in self.calls if r.get("wire") is not None]

        def ms(values: list[float]) -> str:
            if not values:
                return "-"
            v = sorted(values)
            pick = [v[min(len(v) - 1, int(q * len(v)))] for q in (0.5, 0.9, 0.99)]
            return "p50/p90/p99/max " + "/".join(f"{x * 1000:.0f}" for x in [*pick, v[-1]])

        slotted = [r for r in sent if r["due"] is not None]
        out: dict[str, Any] = {
            "slot_to_thread_ms": ms([r["start"] - r["due"] for r in slotted]),
            "thread_to_send_ms": ms([r["send"] - r["start"] for r in sent if "send" in r]),
            "send_to_proxy_ms": ms([r["wire"] - r["send"] for r in sent if "send" in r]),
            "slot_to_proxy_ms": ms([r["wire"] - r["due"] for r in slotted]),
            "proxy_later_than_margin": sum(1 for r in slotted if r["wire"] - r["due"] > margin),
            "missed_slots": sum(1 for r in self.calls if r.get("missed")),
        }
        i, j = worst_pair(wire, rate, burst, jitter)
        if i is not None and j is not None:
            lo, hi = wire[i], wire[j]
            inside = sorted((r for r in sent if lo <= r["wire"] <= hi), key=lambda r: r["wire"])
            out["worst_window"] = [
                f"{r['host']}:{r['op'][:9]}@{r['wire'] - lo:.3f}"
                + (f" slot{r['due'] - lo:+.3f}" if r["due"] is not None else "")
                for r in inside
            ]
        return out


def per_10s(wire: list[tuple[float, str]], t0: float) -> list[str]:
    """Calls at the wire per 10 s from ``t0``, as ``"creates/describes/terminates"`` (where the
    time of a slow run went)."""
    buckets: dict[int, list[int]] = {}
    kinds = ("RunInstances", "DescribeInstances", "TerminateInstances")
    for t, action in wire:
        if t >= t0 and action in kinds:
            buckets.setdefault(int((t - t0) // 10), [0, 0, 0])[kinds.index(action)] += 1
    return [
        "/".join(map(str, buckets.get(i, [0, 0, 0]))) for i in range(max(buckets, default=-1) + 1)
    ]


def worst_pair(
    times: list[float], rate: float, burst: float, jitter: float
) -> tuple[int | None, int | None]:
    """The first and last call (indexes in sorted ``times``) of the worst window."""
    worst, pair = float("-inf"), (None, None)
    times = sorted(times)
    for i, start in enumerate(times):
        for j in range(i, len(times)):
            excess = (j - i + 1) - (burst + rate * (times[j] - start + jitter))
            if excess > worst:
                worst, pair = excess, (i, j)
            if times[j] - start > 5:
                break
    return pair


def worst_window(times: list[float], rate: float, burst: float, jitter: float) -> float:
    """The largest excess of calls over ``burst + rate * (w + jitter)`` in any window (<= 0: ok)."""
    times = sorted(times)
    i, j = worst_pair(times, rate, burst, jitter)
    if i is None or j is None:
        return float("-inf")
    return (j - i + 1) - (burst + rate * (times[j] - times[i] + jitter))


async def rate_limited_storm(
    server: MotoServer, n: int, rate: float, burst: float, jitter: float
) -> dict[str, Any]:
    """Phase 2: ``n`` VMs spawned, polled up and terminated at once under ``rate`` calls/s,
    timed at the wire by a proxy in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        proxy = ProxyProcess(server.port, f"{tmp}/times.json")
        backend = _backend(proxy.url, "storm", rate=rate, burst=burst)
        latencies = _time_sdk_calls(backend)
        tracer = Tracer()
        tracer.attach(backend, "A")
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
        "sdk_call_seconds": latency(latencies),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "excess_by_jitter": {
            j: round(worst_window(times, rate, burst, j), 3) for j in (0.0, 0.02, 0.05, 0.1)
        },
        "creates/describes/terminates_per_10s": per_10s(wire, t0),
        **tail(wire, t0, elapsed),
        "trace": tracer.report(proxy.traced, times, rate, burst, jitter, math.inf),
    }


def tail(wire: list[tuple[float, str]], t0: float, elapsed: float) -> dict[str, Any]:
    """When the last create went, and what the rest of the run was (the tail)."""
    creates = [t for t, action in wire if action == "RunInstances" and t >= t0]
    last = max(creates) - t0 if creates else 0.0
    after = Counter(action for t, action in wire if t > t0 + last)
    return {"last_create_at_s": round(last, 2), "after_last_create": dict(after)}


def loadavg() -> str:
    """The load average over 1, 5 and 15 minutes."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new database on the server of ``admin_url``, migrated, dropped at the end.

    The bench must not share a database other processes use (the default ``test`` is migrated,
    emptied and dropped into by other runs): its migration and, before the statements had
    timeouts, its bucket statements waited without a limit for locks their sessions held; the
    likeliest cause of one full run that stalled at the start of phase 3 (see docs/cloud.md)."""
    import psycopg

    from corral.store import migrate

    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(plain)._replace(path=f"/{name}").geturl()
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(plain, autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def cluster_storm(
    server: MotoServer,
    n: int,
    rate: float,
    burst: float,
    jitter: float,
    pg_url: str,
    margin: float,
) -> dict[str, Any]:
    """Phase 3: phase 2 split over two hosts sharing the account's bucket in PostgreSQL."""
    account = f"cluster{uuid.uuid4().hex[:8]}"  # a fresh bucket row for this run
    with tempfile.TemporaryDirectory() as tmp:
        proxy = ProxyProcess(server.port, f"{tmp}/times.json")
        guards = []
        latencies = []
        limiters = []
        tracer = Tracer()
        for host in "AB":
            ratelimit.forget_limiters()  # another process: its own limiter
            backend = _backend(proxy.url, account, rate=rate, burst=burst)
            backend.attach_store(pg_url)
            backend.limiter.late_margin = margin
            limiters.append(backend.limiter)
            latencies.append(_time_sdk_calls(backend))
            tracer.attach(backend, host)
            guards.append(_guard(backend, n))
        try:
            for guard in guards:
                await guard.list()
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            await asyncio.gather(*(_lifecycle(guards[i % 2], i) for i in range(n)))
            elapsed = time.monotonic() - t0
        finally:
            for guard in guards:
                await guard.aclose()
            wire = proxy.stop()
    times = [t for t, _ in wire if t >= t0]
    calls = len(times)
    allowed = max(0.0, (calls - burst) / rate)
    creates = [x for lat in latencies for x in lat.get("run_instances", [])]
    return {
        "vms": n,
        "hosts": 2,
        "calls": calls,
        "elapsed_s": round(elapsed, 2),
        "limit_allows_s": round(allowed, 2),
        "ratio_elapsed_over_allowed": round(elapsed / allowed, 3) if allowed else 0.0,
        "worst_window_excess_calls": round(worst_window(times, rate, burst, jitter), 3),
        "mean_run_instances_latency_s": round(sum(creates) / max(1, len(creates)), 3),
        "sdk_call_seconds": latency(latencies),
        "bucket_row_asks_per_host": [lim.cluster_asks for lim in limiters],
        "missed_slots_per_host": [lim.missed for lim in limiters],
        "load_average_1min": round(os.getloadavg()[0], 2),
        "excess_by_jitter": {
            j: round(worst_window(times, rate, burst, j), 3) for j in (0.0, 0.02, 0.05, 0.1)
        },
        "creates/describes/terminates_per_10s": per_10s(wire, t0),
        **tail(wire, t0, elapsed),
        "trace": tracer.report(proxy.traced, times, rate, burst, jitter, margin),
    }


class _Retries(logging.Handler):
    """Counts the backends' retried calls (their INFO lines "...: <error>; retry in N s")."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "retry in" in message:
            self.seen[message.split(": ", 1)[-1].rsplit(";", 1)[0][:80]] += 1


RETRIES = _Retries()


async def main() -> None:
    """Run the phases on one moto server, reset before each storm: moto keeps terminated
    instances for good and evaluates a describe's filters over every instance it ever held (tag
    by tag), so phase 3 after phase 2 described 1,000 instances per call where it makes 500,
    and its describes took seconds each (real EC2 forgets terminated instances within the hour
    and filters on its side)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=500)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--burst", type=float, default=5.0)
    parser.add_argument("--jitter", type=float, default=0.02)
    parser.add_argument("--pg", default=None, help="PostgreSQL URL: also run phase 3 (cluster)")
    parser.add_argument("--skip-single", action="store_true", help="skip phases 1 and 2")
    parser.add_argument(
        "--late-margin",
        type=float,
        default=ratelimit.LATE_MARGIN,
        help="phase 3: seconds after its slot a call may still leave ('inf': no deadline, "
        "the behaviour before the deadline existed)",
    )
    args = parser.parse_args()
    os.environ.update(FAKE_CREDENTIALS)
    logging.getLogger("corral.backends.cloud").addHandler(RETRIES)
    logging.getLogger("corral.backends.cloud").setLevel(logging.INFO)
    server = MotoServer()
    server.start()
    proxy = FaultProxy(server.port)
    try:
        ratelimit.forget_limiters()
        if not args.skip_single:
            print("load average before phase 1:", loadavg())
            one = await calls_per_operation(proxy)
            print("1. calls per operation:", one)
            ok1 = one["run_instances_per_spawn"] == 1 and (
                one["describes_during_spawn"] <= one["poll_intervals_during_spawn"] + 1
            )
            print(f"   target 1 create per spawn, <= 1 describe per poll interval: {ok1}")
            server.reset()  # see "moto keeps terminated instances" in main's docstring
            print("load average before phase 2:", loadavg())
            two = await rate_limited_storm(server, args.vms, args.rate, args.burst, args.jitter)
            print("load average after phase 2:", loadavg())
            print(f"2. {args.vms} VMs at {args.rate:g} calls/s:", two)
            print("   retried calls:", dict(RETRIES.seen) or "none")
            RETRIES.seen.clear()
            within = two["ratio_elapsed_over_allowed"] <= 1.10
            never = two["worst_window_excess_calls"] <= 0
            print(f"   limit never exceeded: {never}; time within 10 % of the limit: {within}")
        if args.pg:
            server.reset()
            with fresh_database(args.pg) as pg_url:
                print("load average before phase 3:", loadavg())
                three = await cluster_storm(
                    server, args.vms, args.rate, args.burst, args.jitter, pg_url, args.late_margin
                )
                print("load average after phase 3:", loadavg())
            print(f"3. {args.vms} VMs on 2 hosts sharing {args.rate:g} calls/s:", three)
            print("   retried calls:", dict(RETRIES.seen) or "none")
            within = three["ratio_elapsed_over_allowed"] <= 1.10
            never = three["worst_window_excess_calls"] <= 0
            print(f"   limit never exceeded: {never}; time within 10 % of the limit: {within}")
    finally:
        proxy.close()
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
