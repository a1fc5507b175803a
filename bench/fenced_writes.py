"""What a fence costs a VM write on PostgreSQL (issue 11): ``update_vm`` without a fence, with a
pool leader's ``LeaseFence`` and with a task's ``LockFence``, alternated round by round on one
scratch database; the median microseconds per write of each kind.

    CORRAL_BENCH_PG_URL=postgresql://root@127.0.0.1:5432/test python bench/fenced_writes.py

The fence is a condition of the write's own statement (``EXISTS … FOR SHARE``): no extra round
trip, a share lock of the lease or grant row. Print ``uptime`` beside the figures: the machine is
shared.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from corral.store import open_store
from corral.store.pools import Fence, LeaseFence, LockFence


async def main(url: str, rounds: int, writes: int) -> None:
    import psycopg

    from corral.cluster.pgrepo import PgCluster
    from corral.cluster.repository import HostInfo
    from corral.locks.pg import PgLockManager

    name = f"corral_fence_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    scratch = url.rsplit("/", 1)[0] + f"/{name}"
    try:
        store = await open_store(scratch)
        repo = PgCluster(scratch)
        try:
            await repo.register("h1", "s1", 600.0, HostInfo())
            lease = await repo.take_lease("pool/p", "h1", "s1", 600.0)
            vm = await store.pools.create_vm("p", state="ready", now=1.0)
            async with PgLockManager(scratch, host_id="h1", lease=600.0) as locks:
                key = f"vm/{vm.name}"
                held = await locks.acquire({key: "exclusive"}, owner="bench")
                fences: dict[str, Fence | None] = {
                    "none": None,
                    "lease": LeaseFence("pool/p", "s1", lease.epoch),
                    "lock": LockFence(key, held.token(key)),
                }
                took: dict[str, list[float]] = {k: [] for k in fences}
                for n in range(rounds):
                    for kind, fence in fences.items():
                        started = time.perf_counter()
                        for i in range(writes):
                            done = await store.pools.update_vm(
                                vm.name,
                                expect=["ready"],
                                changes={"livecheck_failures": (n + i) % 3},
                                fence=fence,
                            )
                            assert done is not None
                        took[kind].append((time.perf_counter() - started) / writes * 1e6)
                held.release()
            for kind, values in took.items():
                print(
                    f"update_vm fence={kind:5}  median {statistics.median(values):7.0f} us/write"
                    f"  (rounds {min(values):.0f}-{max(values):.0f})"
                )
            print("load average:", " ".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            await repo.close()
            await store.close()
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--writes", type=int, default=300)
    args = parser.parse_args()
    pg = os.environ.get("CORRAL_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
    asyncio.run(main(pg, args.rounds, args.writes))
