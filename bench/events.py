"""Benchmark of the event stream (issue 12): 200 SSE subscribers while the resalloc workload runs.

One process runs the controller (SQLite store, script backend: ``new`` = ``sleep 0.1; echo
127.0.0.1``, ``delete`` = ``true``; max 50, max_starting 50, min_ready 20, no reuse) and serves
its API with uvicorn, its startup objects frozen out of the garbage collector as in ``corral
serve``; the resalloc workload (10 clients x 20 tickets, each closed as soon as it is
assigned) runs in that process, as in ``bench/pools.py``, its tickets owned by 190 users in turn.
A second process holds ``--subscribers`` streams of ``GET /v1/events`` (10 admin tokens, the rest
user tokens, each seeing its own tickets and the pools' counts) and measures, for every event,
receive time minus the event's ``at`` (the controller's clock when it published it).

Figures: tickets/s of the workload without subscribers and with them, runs interleaved in one
invocation (without, with, with, without, ...: a load that drifts hits both alike; target: within
15 %), and the delivery latency p50/p99/max (target p99 <= 100 ms), the events received, and the
streams dropped (should be none). The load average is printed at the start and the end. Both
processes share the machine's cores, so the subscribers' own parsing competes with the server:
the figure is pessimistic for a server with its own host.

Run: ``python bench/events.py`` (5 pairs of runs; ``--quick``: 50 subscribers, one pair;
``--pairs N``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from corral.api import create_app
from corral.api.server import free_port, freeze_startup_objects
from corral.config import parse_config
from corral.controller import Controller

TARGET_P99 = 0.100
TARGET_RATE_LOSS = 0.15
USERS = 190
ADMINS = 10


def _tokens() -> dict[str, dict[str, str]]:
    tokens = {
        f"admin-token-{i:03d}": {"owner": f"admin{i}", "role": "admin"} for i in range(ADMINS)
    }
    tokens.update(
        {f"user-token-{i:03d}": {"owner": f"u{i:03d}", "role": "user"} for i in range(USERS)}
    )
    return tokens


def _config(tmp: str) -> Any:
    pool = {
        "backend": {
            "type": "script",
            "new": ["sh", "-c", "sleep 0.1; echo 127.0.0.1"],
            "delete": ["true"],
        },
        "max": 50,
        "max_starting": 50,
        "min_ready": 20,
        "poll_interval": 0.01,
        "reuse": {"sandbox": False},
    }
    raw = {
        "store": f"sqlite:///{tmp}/corral.db",
        "api": {"tokens": _tokens()},
        "pools": {"p": pool},
    }
    return parse_config(raw, env={})


# --- subscribers (their own process) -------------------------------------------------------------


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))]


AT = re.compile(rb'"at":([0-9]+\.[0-9]+)')


async def _subscribe(url: str, token: str, latencies: list[float], state: dict[str, int]) -> None:
    """One stream over a bare socket: a client as light as possible, so that the measured server
    does not lose its CPU to the subscribers' HTTP library (httpx cost ~6x more CPU here)."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    request = (
        f"GET /v1/events HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n"
    )
    writer.write(request.encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200 " not in head.split(b"\r\n", 1)[0]:
        raise SystemExit(f"GET /v1/events: {head[:100]!r}")
    state["connected"] += 1
    rest = b""
    try:
        while chunk := await reader.read(65536):
            now = time.time()
            complete, _, rest = (rest + chunk).rpartition(b"\n\n")  # whole frames only
            if b"event: dropped" in complete:
                state["dropped"] += 1
                return
            latencies.extend(now - float(at) for at in AT.findall(complete))
    finally:
        writer.close()


def _subscribers(url: str, n: int, conn: multiprocessing.connection.Connection) -> None:
    async def main() -> None:
        latencies: list[float] = []
        state = {"connected": 0, "dropped": 0}
        tokens = [f"admin-token-{i:03d}" for i in range(min(ADMINS, n))]
        tokens += [f"user-token-{i % USERS:03d}" for i in range(n - len(tokens))]
        tasks = [asyncio.create_task(_subscribe(url, t, latencies, state)) for t in tokens]
        while state["connected"] < n:
            await asyncio.sleep(0.05)
        conn.send("connected")
        started = time.process_time()
        await asyncio.get_running_loop().run_in_executor(None, conn.recv)  # "stop"
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conn.send((latencies, state["dropped"], time.process_time() - started))

    asyncio.run(main())


# --- the server and the workload (this process) --------------------------------------------------


async def _receive(
    conn: multiprocessing.connection.Connection, process: Any, timeout: float = 120.0
) -> Any:
    """The subscribers' next message; ``SystemExit`` if their process died or went silent (a
    bare ``recv`` would wait forever)."""
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + timeout
    while not await loop.run_in_executor(None, conn.poll, 0.5):
        if not process.is_alive():
            raise SystemExit(f"the subscribers' process died (exit code {process.exitcode})")
        if time.monotonic() > deadline:
            raise SystemExit("the subscribers' process did not answer")
    return conn.recv()


async def _workload(ctl: Controller) -> float:
    """tickets/s of 10 clients x 20 tickets, closed as soon as assigned."""
    done = 0

    async def client(c: int) -> None:
        nonlocal done
        for i in range(20):
            owner = f"u{(c * 20 + i) % USERS:03d}"
            ticket = await ctl.create_ticket(owner=owner, pool="p")
            ticket = await ctl.wait_ticket(ticket.id, timeout=60)
            await ctl.close_ticket(ticket.id)
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(10)))
    return done / (time.perf_counter() - start)


async def _until_ready(ctl: Controller, n: int) -> None:
    deadline = time.monotonic() + 120
    while (await ctl.get_pool("p")).vms.get("ready", 0) < n:
        if time.monotonic() > deadline:
            raise SystemExit(f"the pool did not reach {n} ready VMs")
        await asyncio.sleep(0.05)


async def run(subscribers: int) -> tuple[float, list[float], int, float]:
    """tickets/s, delivery latencies, dropped streams and the server's CPU seconds during the
    workload of one run (0 subscribers: none)."""
    with tempfile.TemporaryDirectory(prefix="corral-bench-events-") as tmp:
        config = _config(tmp)
        ctl = await Controller.create(config)
        await ctl.start()
        port = free_port()
        app = create_app(ctl, config)
        freeze_startup_objects()  # as 'corral serve' does once it serves
        server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=port,
                log_level="warning",
                lifespan="off",
            )
        )
        serving = asyncio.create_task(server.serve())
        process = None
        try:
            while not server.started:
                await asyncio.sleep(0.01)
            await _until_ready(ctl, 20)
            if subscribers:
                parent, child = multiprocessing.Pipe()
                process = multiprocessing.get_context("spawn").Process(
                    target=_subscribers, args=(f"http://127.0.0.1:{port}", subscribers, child)
                )
                process.start()
                await _receive(parent, process)  # all connected
            cpu = time.process_time()
            rate = await _workload(ctl)
            cpu = time.process_time() - cpu
            latencies: list[float] = []
            dropped = 0
            client_cpu = 0.0
            if process is not None:
                await asyncio.sleep(1.0)  # the last events reach the subscribers
                parent.send("stop")
                latencies, dropped, client_cpu = await _receive(parent, process)
                process.join(30)
        finally:
            if process is not None and process.is_alive():
                process.kill()
            await app.state.corral_events.close()  # the streams end, uvicorn need not wait
            server.should_exit = True
            await serving
            await ctl.stop()
    print(
        f"  run with {subscribers} subscribers: {rate:.0f} tickets/s, server CPU {cpu:.1f} s "
        f"during the workload, subscribers' process CPU {client_cpu:.1f} s (connected to stopped)"
        + (
            f", delivery p50 {_percentile(latencies, 50) * 1000:.0f} ms p99 "
            f"{_percentile(latencies, 99) * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}"
            if latencies
            else f", load {os.getloadavg()[0]:.1f}"
        ),
        flush=True,
    )
    return rate, latencies, dropped, cpu


async def main(pairs: int, subscribers: int) -> None:
    print(
        f"bench/events {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}, {pairs} pairs of runs, "
        f"{subscribers} subscribers",
        flush=True,
    )
    base: list[float] = []
    base_cpu: list[float] = []
    runs: list[tuple[float, list[float], int, float]] = []
    for i in range(pairs):
        order = (0, subscribers) if i % 2 == 0 else (subscribers, 0)
        for n in order:
            result = await run(n)
            if n:
                runs.append(result)
            else:
                base.append(result[0])
                base_cpu.append(result[3])
    without = statistics.median(base)
    with_subs = statistics.median(r[0] for r in runs)
    latencies = [x for r in runs for x in r[1]]
    dropped = sum(r[2] for r in runs)
    loss = 1 - with_subs / without
    p99 = _percentile(latencies, 99)
    print(
        f"resalloc workload without subscribers: {without:.0f} tickets/s (median of {pairs}: "
        f"{', '.join(f'{x:.0f}' for x in base)})"
    )
    print(
        f"with {subscribers} SSE subscribers ({ADMINS} admin): {with_subs:.0f} tickets/s (median "
        f"of {pairs}: {', '.join(f'{r[0]:.0f}' for r in runs)}), {loss * 100:+.1f} % slower "
        f"(target <= {TARGET_RATE_LOSS * 100:.0f} %: "
        f"{'met' if loss <= TARGET_RATE_LOSS else 'NOT met'})"
    )
    print(
        f"delivery latency over {len(latencies)} events received: p50 "
        f"{_percentile(latencies, 50) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, max "
        f"{max(latencies) * 1000:.1f} ms (target p99 <= {TARGET_P99 * 1000:.0f} ms: "
        f"{'met' if p99 <= TARGET_P99 else 'NOT met'}); streams dropped: {dropped}"
    )
    cpu_without = statistics.median(base_cpu)
    cpu_with = statistics.median(r[3] for r in runs)
    print(
        f"server CPU during the workload (median): {cpu_without:.2f} s without, {cpu_with:.2f} s "
        f"with the subscribers ({(cpu_with / cpu_without - 1) * 100:+.0f} %; on a loaded machine "
        "this is steadier than tickets/s, and on an idle one, where the workload keeps a core "
        "busy, the loss of tickets/s follows it)"
    )
    p99s = sorted(_percentile(r[1], 99) for r in runs if r[1])
    print(f"delivery p99 per run: {', '.join(f'{x * 1000:.0f} ms' for x in p99s)}")
    print(f"load average at the end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one pair of runs, 50 subscribers")
    parser.add_argument("--pairs", type=int, default=None, help="pairs of runs (default 5)")
    parser.add_argument("--subscribers", type=int, default=None)
    args = parser.parse_args()
    pairs = args.pairs or (1 if args.quick else 5)
    asyncio.run(main(pairs, args.subscribers or (50 if args.quick else 200)))
