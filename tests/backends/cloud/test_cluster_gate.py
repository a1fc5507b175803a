"""The contract of a :class:`~corral.backends.cloud.ratelimit.ClusterGate` (a cloud account's
token bucket shared by every host), run against the in-memory gate and against PostgreSQL's
bucket row (``SharedCloud``), and what the PostgreSQL gate adds: timeouts (issue 13).

Breakages caught: a slot granted before it is due (beyond the caller's lead), a refusal that
takes a slot or says a wrong time to ask again, a lead that does not let a priority call in
first, a pause that holds nobody back, a bucket that forgets its burst; and for PostgreSQL, a
row lock never released stalling every host silently (no lock timeout).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import psycopg
import pytest

from corral import exceptions
from corral.backends.cloud.ratelimit import ClusterGate, MemoryClusterGate, RateLimiter
from corral.store import migrate


@pytest.fixture(params=["memory", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def gate(request: pytest.FixtureRequest) -> AsyncIterator[ClusterGate]:
    """Each implementation of the gate, on a real clock."""
    if request.param == "memory":
        yield MemoryClusterGate()
        return
    from corral.backends.cloud.shared import SharedCloud

    url = request.getfixturevalue("pg_url")
    migrate.upgrade(url)
    shared = SharedCloud(url)
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def account() -> str:
    """A fresh account key (a fresh bucket row)."""
    return f"acct-{uuid.uuid4().hex[:8]}"


async def test_an_idle_bucket_grants_its_burst_then_refuses(
    gate: ClusterGate, account: str
) -> None:
    """Burst 3 at 2/s (intervals of 0.5 s, longer than a round trip on a loaded machine)."""
    slots = [await gate.try_reserve(account, 2.0, 3.0, 0.0) for _ in range(4)]
    assert [s.granted for s in slots] == [True, True, True, False]
    assert all(s.wait == 0 for s in slots[:3])
    assert 0.3 < slots[3].wait <= 0.5  # the fourth is due one interval after the burst


async def test_a_refusal_takes_nothing_and_says_when_to_ask(
    gate: ClusterGate, account: str
) -> None:
    assert (await gate.try_reserve(account, 4.0, 1.0, 0.0)).granted
    refused = [await gate.try_reserve(account, 4.0, 1.0, 0.0) for _ in range(3)]
    assert not any(s.granted for s in refused)
    assert refused[-1].wait <= refused[0].wait  # still the same slot: nothing was taken
    await asyncio.sleep(refused[-1].wait + 0.01)
    assert (await gate.try_reserve(account, 4.0, 1.0, 0.0)).granted


async def test_a_lead_takes_the_next_slot_before_it_is_due(gate: ClusterGate, account: str) -> None:
    """A priority call (lead 1 s) takes a slot due in 0.5 s at once, told to wait for it; a
    call without a lead asking at the same moment is refused the slot after it."""
    assert (await gate.try_reserve(account, 2.0, 1.0, 0.0)).granted
    assert not (await gate.try_reserve(account, 2.0, 1.0, 0.0)).granted
    early = await gate.try_reserve(account, 2.0, 1.0, 1.0)
    assert early.granted and 0.3 < early.wait <= 0.5
    late = await gate.try_reserve(account, 2.0, 1.0, 0.0)
    assert not late.granted and 0.8 < late.wait <= 1.0


async def test_a_pause_holds_every_caller_back(gate: ClusterGate, account: str) -> None:
    assert (await gate.try_reserve(account, 100.0, 5.0, 0.0)).granted
    await gate.pause(account, 1.0)
    refused = await gate.try_reserve(account, 100.0, 5.0, 0.5)  # not even with a lead
    assert not refused.granted and 0.3 < refused.wait <= 0.5


@pytest.mark.postgres
async def test_a_row_locked_forever_is_an_error_not_a_stall(pg_url: str, account: str) -> None:
    """Another session holds the bucket row's lock and never lets go: the limiter's waiters get
    a BackendError naming the account after the gate's timeout. Breakage caught: statements
    without a lock timeout, and a dispatcher that dies or hangs on a gate error (every waiter
    of the host then waits forever: event loop idle, no request sent)."""
    from corral.backends.cloud.shared import SharedCloud

    migrate.upgrade(pg_url)
    shared = SharedCloud(pg_url, timeout=1.0)
    limiter = RateLimiter(10.0, 1.0)
    limiter.share(account, shared)
    holder = psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://"))
    try:
        await limiter.acquire()  # the row exists now
        holder.execute(
            "SELECT * FROM cloud_rate_buckets WHERE account = %s FOR UPDATE", (account,)
        )  # left open: the transaction holds the row
        started = time.monotonic()
        results = await asyncio.wait_for(
            asyncio.gather(*(limiter.acquire(i % 2) for i in range(4)), return_exceptions=True),
            timeout=60,
        )
        assert time.monotonic() - started < 30
        assert all(isinstance(r, exceptions.BackendError) for r in results), results
        assert account in str(results[0]) and "could not be reached" in str(results[0])
        holder.rollback()
        await asyncio.wait_for(limiter.acquire(), timeout=30)  # and it recovers
    finally:
        holder.close()
        shared.close()


@pytest.mark.postgres
async def test_priority_holds_across_hosts_sharing_the_postgresql_bucket(
    pg_url: str, account: str
) -> None:
    """Two hosts (two limiters, two connection pools) share one bucket row at 20 calls/s,
    burst 1. Each sends 16 creates at once (acquire on the loop, then the worker thread's
    ``wait_sync``, as the backends do); once 8 have gone, host B sends a describe. At most the
    creates that held a slot already (one per host, and one recorded late) go before it.

    Breakage caught: the cluster's slot taken first come first served in the worker thread (the
    version before this test): each host's own limiter admits 20/s, the creates queue for the
    database's slots, and the describe waits behind all of them (about 8 in this scenario)."""
    from concurrent.futures import ThreadPoolExecutor

    from corral.backends.cloud.shared import SharedCloud

    migrate.upgrade(pg_url)
    gates = [SharedCloud(pg_url), SharedCloud(pg_url)]
    hosts = []
    for gate in gates:
        limiter = RateLimiter(20.0, 1.0)
        limiter.share(account, gate)
        hosts.append(limiter)
    threads = ThreadPoolExecutor(64)
    loop = asyncio.get_running_loop()
    went: list[str] = []
    eight_gone = asyncio.Event()

    async def call(host: int, what: str, priority: int) -> None:
        await hosts[host].acquire(priority)
        await loop.run_in_executor(threads, hosts[host].wait_sync)
        went.append(what)
        if len(went) == 8:
            eight_gone.set()

    async def describe_later() -> int:
        await eight_gone.wait()
        sent_after = len(went)
        await call(1, "describe", 0)
        return went.index("describe") - sent_after

    try:
        jobs = [call(h, f"create-{h}-{i}", 1) for i in range(16) for h in (0, 1)]
        *_, ahead = await asyncio.wait_for(asyncio.gather(*jobs, describe_later()), 120)
    finally:
        threads.shutdown()
        for gate in gates:
            gate.close()
    assert len(went) == 33
    assert ahead <= 3, went
