"""Benchmark of fencing tokens in the EC2 backend (issue 11): API calls per VM, fenced or not.

Run: ``python bench/fencing.py`` (``--vms 50 --rounds 3``). Starts moto's EC2 server with the
counting proxy of ``tests/backends/cloud/cloudsim.py`` (as ``bench/cloud.py`` does) and, for
``--rounds`` rounds alternating the two modes, spawns ``--vms`` VMs at once, waits until they
are up and terminates them all at once, through the guard:

- ``unfenced``: no fence (a single host; what ``bench/cloud.py`` measures);
- ``fenced``: each spawn under token i, each terminate under a newer token of the same holder
  (one host spawning and terminating: the normal path on PostgreSQL);
- ``takeover``: spawned under host A's tokens, terminated by host B under newer ones (every VM
  a survivor's: each terminate batch needs one CreateTags).

Prints the calls per VM by action, and the seconds the terminations took (from the first
terminate to the last), median over the rounds, with the load average beside each figure:
targets are 1 RunInstances per spawn in every mode, no CreateTags when one host spawns and
terminates, and describes per terminate shared (far below 1 per VM).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from corral.backends import load_backend  # noqa: E402
from corral.backends.base import Fence, PollStatus, VMSpec  # noqa: E402
from corral.backends.cloud import ratelimit  # noqa: E402
from corral.backends.cloud.ec2 import EC2Backend  # noqa: E402
from corral.backends.guard import GuardedBackend  # noqa: E402
from tests.backends.cloud.cloudsim import (  # noqa: E402
    AMI,
    FAKE_CREDENTIALS,
    REGION,
    FaultProxy,
    MotoServer,
)

MODES = ("unfenced", "fenced", "takeover")


def _guard(url: str, namespace: str, n: int) -> GuardedBackend:
    options = {
        "region": REGION,
        "endpoint_url": url,
        "image_id": AMI,
        "namespace": namespace,
        "describe_interval": 1.0,
        "rate": 1000.0,
        "burst": 100.0,
        "account": namespace,
        "blocking_workers": 32,
    }
    backend = load_backend("ec2", options, pool="bench")
    assert isinstance(backend, EC2Backend)
    return GuardedBackend(backend, call_timeout=600, max_concurrency=2 * n + 16, max_spawns=n)


def loadavg() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


async def one_round(proxy: FaultProxy, mode: str, n: int) -> tuple[Counter[str], float]:
    namespace = f"f{uuid.uuid4().hex[:10]}"
    host_a = _guard(proxy.url, namespace, n)
    host_b = _guard(proxy.url, namespace, n) if mode == "takeover" else host_a
    try:
        await host_a.list()  # warm the clients up
        await host_b.list()
        start = Counter(proxy.traffic.calls)

        def spawn_fence(i: int) -> Fence | None:
            return None if mode == "unfenced" else Fence(1 + i, "host-a#1")

        def end_fence(i: int) -> Fence | None:
            if mode == "unfenced":
                return None
            return Fence(10_000 + i, "host-a#1" if mode == "fenced" else "host-b#1")

        specs = [VMSpec(f"bench-{i:05d}", "bench", i, {}) for i in range(n)]
        handles = await asyncio.gather(
            *(host_a.spawn(s, fence=spawn_fence(i)) for i, s in enumerate(specs))
        )
        results = await asyncio.gather(*(host_a.wait_up(h, timeout=300) for h in handles))
        assert all(r.status is PollStatus.UP for r in results)
        t0 = time.monotonic()
        await asyncio.gather(
            *(host_b.terminate(h, fence=end_fence(i)) for i, h in enumerate(handles))
        )
        seconds = time.monotonic() - t0
        return Counter(proxy.traffic.calls) - start, seconds
    finally:
        await host_a.aclose()
        if host_b is not host_a:
            await host_b.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(FAKE_CREDENTIALS)
    server = MotoServer()
    server.start()
    proxy = FaultProxy(server.port)
    calls: dict[str, list[Counter[str]]] = {m: [] for m in MODES}
    seconds: dict[str, list[float]] = {m: [] for m in MODES}
    try:
        print(f"load average at the start: {loadavg()}")
        for r in range(args.rounds):
            for mode in MODES:  # alternated in one run: the machine's load hits all modes alike
                ratelimit.forget_limiters()
                made, took = await one_round(proxy, mode, args.vms)
                calls[mode].append(made)
                seconds[mode].append(took)
                print(f"round {r + 1} {mode:<9} terminate {took:5.2f} s  load {loadavg()}")
    finally:
        proxy.close()
        server.stop()
    actions = ("RunInstances", "DescribeInstances", "CreateTags", "TerminateInstances")
    print(f"\n{args.vms} VMs, median of {args.rounds} rounds: calls per VM (spawn to terminated)")
    print(f"{'mode':<9} " + " ".join(f"{a:>18}" for a in actions) + "  terminate s")
    for mode in MODES:
        per_vm = [statistics.median(c.get(a, 0) for c in calls[mode]) / args.vms for a in actions]
        print(
            f"{mode:<9} "
            + " ".join(f"{v:>18.3f}" for v in per_vm)
            + f"  {statistics.median(seconds[mode]):11.2f}"
        )
    print(f"load average at the end: {loadavg()}")


if __name__ == "__main__":
    asyncio.run(main())
