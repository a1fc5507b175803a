"""Cross-host wake-ups on PostgreSQL: two controllers on one database, each with its own
connections (as two hosts would have), and ticks far longer than the test's deadlines, so only
a NOTIFY (or the re-read after a reconnect) can deliver what the other host did in time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
import pytest

from corral.controller import Controller
from corral.pools.model import TicketState

from .conftest import controller, fake_backend

pytestmark = pytest.mark.postgres

TICK = 120.0  # no periodic re-read or tick-driven assignment can happen within a test
DEADLINE = 20.0  # generous; a wake-up takes milliseconds (bench/cluster.py measures it)


@asynccontextmanager
async def two_hosts(
    pg_url: str, min_ready: int = 0
) -> AsyncIterator[tuple[Controller, Controller]]:
    """Host A preallocates and maintains; host B only serves tickets (a secondary)."""
    fake = fake_backend()
    async with controller({"min_ready": min_ready}, fake=fake, store_url=pg_url, tick=TICK) as a:
        b = await Controller.create(a.config, backends={"p": fake}, recover=False, tick=TICK)
        await b.start()
        try:
            yield a, b
        finally:
            await b.stop()


async def test_ticket_waiting_on_b_is_assigned_from_a_vm_made_ready_through_a(
    pg_url: str,
) -> None:
    """B's ticket asks A (the only host that spawns) for a VM, A spawns it, the ticket is
    assigned (by A, or by B woken by A's "assign") and B's long-poll returns it. Breakages
    caught: no spawn wake-up from B (A never spawns within the deadline); neither an assign
    nor a ticket wake-up from A; a host acting on its own echo instead of the other's
    messages (nothing reaches A)."""
    async with two_hosts(pg_url) as (a, b):
        ticket = await b.create_ticket(owner="alice", pool="p")
        got = await b.wait_ticket(ticket.id, timeout=DEADLINE)
        assert got.state is TicketState.ASSIGNED and got.vm is not None
        assert (await a.get_vm(got.vm)).ticket == ticket.id
        assert a.crosshost.wakeups is not None and a.crosshost.wakeups.received > 0
        assert b.crosshost.wakeups is not None and b.crosshost.wakeups.received > 0


async def _assigned_by_a(a: Controller, ticket_id: str) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while (await a.get_ticket(ticket_id)).state is TicketState.WAITING:
        assert loop.time() < end, "A did not assign the ticket"
        a.kick_assign()
        await asyncio.sleep(0.05)


async def test_a_ticket_assigned_by_a_wakes_its_long_poll_on_b(pg_url: str) -> None:
    """B does not assign at all (its assignment runner is stopped); A assigns B's ticket and
    B's long-poll returns it. Breakage caught: no ticket wake-up from A (B's waiter sleeps
    until its tick and times out)."""
    async with two_hosts(pg_url, min_ready=1) as (a, b):
        await b.assignment.close()
        ticket = await b.create_ticket(owner="carol", pool="p")
        waiter = asyncio.create_task(b.wait_ticket(ticket.id, timeout=DEADLINE))
        await _assigned_by_a(a, ticket.id)
        got = await waiter
        assert got.state is TicketState.ASSIGNED


async def test_a_lost_wakeup_is_recovered_by_the_reread_after_a_reconnect(pg_url: str) -> None:
    """A assigns B's ticket while A announces nothing (as if the NOTIFY were lost) and B does
    not assign (its runner is stopped); then B's listening connection is killed. After
    reconnecting, B re-reads and its waiter returns the assigned ticket. Breakage caught: no
    re-read on reconnect (the waiter sleeps until its tick, far beyond the deadline)."""
    async with two_hosts(pg_url, min_ready=1) as (a, b):
        assert b.crosshost.wakeups is not None
        await b.assignment.close()
        await a.crosshost.close()  # A goes silent: its next announcements are lost
        ticket = await b.create_ticket(owner="bob", pool="p")
        waiter = asyncio.create_task(b.wait_ticket(ticket.id, timeout=DEADLINE))
        await _assigned_by_a(a, ticket.id)
        await asyncio.sleep(0.2)
        assert not waiter.done()  # nothing told B: it still waits (the lost wake-up)
        pid = b.crosshost.wakeups.listener_pid()
        assert pid is not None
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        got = await waiter
        assert got.state is TicketState.ASSIGNED


async def test_tasks_on_postgresql_take_their_locks_in_the_shared_lock_table(
    pg_url: str,
) -> None:
    """A controller on PostgreSQL runs its tasks under the cluster's lock table: a VM's lock
    held by another host makes the termination task queue behind it (visible in the shared
    status) and the machine is destroyed only after that host releases. Breakage caught: the
    engine keeping an in-process lock manager on PostgreSQL (the task would not queue and
    would destroy the machine while another host holds its lock)."""
    from corral.locks.pg import PgLockManager

    fake = fake_backend()
    async with controller({"min_ready": 1}, fake=fake, store_url=pg_url, tick=TICK) as a:
        assert isinstance(a.locks, PgLockManager)
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while not (ready := [v for v in await a.list_vms() if v.state == "ready"]):
            assert loop.time() < end, "no VM became ready"
            await asyncio.sleep(0.05)
        name = ready[0].name
        async with PgLockManager(pg_url, host_id="other-host", lease=30.0) as other:
            held = await other.acquire(f"vm/{name}", owner="other-task")
            await a.terminate_vm(name)

            def queued() -> bool:
                return any(s.key == f"vm/{name}" and s.queue for s in other.status())

            while not queued():
                assert loop.time() < end, "the termination did not queue behind the lock"
                await asyncio.sleep(0.05)
            assert name in await fake.names()  # not destroyed while another host holds it
            held.release()
            while name in await fake.names():
                assert loop.time() < end, "the machine was not destroyed after the release"
                await asyncio.sleep(0.05)


@asynccontextmanager
async def three_hosts(pg_url: str) -> AsyncIterator[list[Controller]]:
    """Three full hosts of one cluster (each joins, leads what rendezvous hashing gives it,
    preallocates what it leads); the pool keeps nothing ready, so only a wake-up spawns."""
    from corral.config import parse_config

    fake = fake_backend()
    pool = {"backend": {"type": "fake"}, "max": 5, "min_ready": 0, "poll_interval": 0.01}
    hosts: list[Controller] = []
    try:
        for i in range(3):
            raw = {"store": pg_url, "pools": {"p": pool}, "cluster": {"host_id": f"echo-{i}"}}
            cfg = parse_config(raw, env={})
            ctl = await Controller.create(cfg, backends={"p": fake}, tick=TICK)
            hosts.append(ctl)
            await ctl.start()
        yield hosts
    finally:
        for ctl in reversed(hosts):
            await ctl.stop()


def _received(hosts: list[Controller]) -> int:
    total = 0
    for ctl in hosts:
        assert ctl.crosshost.wakeups is not None
        total += ctl.crosshost.wakeups.received
    return total


async def test_a_spawn_wakeup_is_not_echoed_between_hosts_that_do_not_lead(pg_url: str) -> None:
    """With three hosts, the two that do not lead the pool hear each other's "re-plan the
    pool" wake-ups: only the leader acts on one. Then a quiet cluster stays quiet, and a
    ticket waiting on a follower still gets its VM spawned by the leader. Breakage caught: a
    follower relaying a spawn wake-up it received (the two followers echo it to each other
    for ever: hundreds of messages a second on an idle cluster, a core burnt; mutant
    ``spawn-wakeup-echo``)."""
    async with three_hosts(pg_url) as hosts:
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while sum(ctl.leads("p") for ctl in hosts) != 1:
            assert loop.time() < end, "no single leader of pool p"
            await asyncio.sleep(0.05)
        followers = [ctl for ctl in hosts if not ctl.leads("p")]
        for ctl in followers:
            ctl.kick_spawn("p")  # each asks the leader (and, by LISTEN, the other follower)
        await asyncio.sleep(0.5)
        before = _received(hosts)
        await asyncio.sleep(1.0)
        assert _received(hosts) - before <= 3, "wake-ups keep flowing in an idle cluster"
        ticket = await followers[0].create_ticket(owner="dave", pool="p")
        got = await followers[0].wait_ticket(ticket.id, timeout=DEADLINE)
        assert got.state is TicketState.ASSIGNED


async def test_a_vm_freed_on_a_runs_no_assignment_round_on_b_so_the_hosts_do_not_race(
    pg_url: str,
) -> None:
    """A's VM becomes ready and A assigns its own ticket with it: B hears of the ticket but
    runs no assignment round (A's round after its commit covers every host's tickets; a round
    on every host made them race for the same tickets and VMs). Breakage caught: a host
    re-running its assignment on another host's announcement (mutant
    ``remote-assign-rounds``)."""
    async with two_hosts(pg_url) as (a, b):
        rounds = 0
        assign_once = b.assignment.assign_once

        async def counted() -> int:
            nonlocal rounds
            rounds += 1
            return await assign_once()

        b.assignment.assign_once = counted  # type: ignore[method-assign]
        await asyncio.sleep(0.3)  # B's own start-up round is done
        rounds = 0
        assert b.crosshost.wakeups is not None
        heard = b.crosshost.wakeups.received
        ticket = await a.create_ticket(owner="erin", pool="p")
        got = await a.wait_ticket(ticket.id, timeout=DEADLINE)
        assert got.state is TicketState.ASSIGNED
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        while b.crosshost.wakeups.received == heard:  # A's announcement of the ticket
            assert loop.time() < end, "B heard nothing of A's ticket"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        assert rounds == 0
