"""Fenced VM and ticket writes on PostgreSQL (issue 11): a write made on behalf of a pool's
leadership lease, or under a task's VM lock, is checked in its own statement; once the lease
moved or lapsed, or the grant is gone, the write is refused (``StaleEpoch``, ``StaleToken``),
logged, and nothing is written. A write whose fence holds but whose row condition fails is a
plain miss (``None``), not a refusal.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from corral import exceptions
from corral.cluster.repository import HostInfo
from corral.store import Store, open_store
from corral.store.pools import LeaseFence, LockFence, TicketRow

pytestmark = pytest.mark.postgres


@pytest.fixture
async def store(pg_cluster_url: str) -> AsyncIterator[Store]:
    opened = await open_store(pg_cluster_url)
    try:
        yield opened
    finally:
        await opened.close()


async def _lead(url: str) -> LeaseFence:
    """Host h1 (session s1) takes the lease of pool p: the fence of its writes."""
    from corral.cluster.pgrepo import PgCluster

    repo = PgCluster(url)
    try:
        await repo.register("h1", "s1", 15.0, HostInfo())
        lease = await repo.take_lease("pool/p", "h1", "s1", 15.0)
    finally:
        await repo.close()
    return LeaseFence("pool/p", "s1", lease.epoch)


def _sql(url: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)


MOVE_LEASE = (
    "UPDATE cluster_leases SET holder = 'h2', session = 's2', epoch = epoch + 1"
    " WHERE name = 'pool/p'"
)
LAPSE_LEASE = "UPDATE cluster_leases SET expires_at = 0 WHERE name = 'pool/p'"


def _ticket(tid: str) -> TicketRow:
    return TicketRow(
        id=tid,
        owner="o",
        state="waiting",
        created_at=1.0,
        expires_at=5.0,
        pool="p",
        tags=(),
        sandbox=None,
        priority=0,
        ttl=4.0,
    )


@pytest.mark.parametrize("stale", [MOVE_LEASE, LAPSE_LEASE], ids=["moved", "lapsed"])
async def test_vm_writes_under_a_stale_lease_are_refused_logged_and_change_nothing(
    pg_cluster_url: str, store: Store, stale: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: ``update_vm`` ignoring its lease fence (a stale leader's livecheck,
    retirement, hold expiry or orphan move lands on a pool another host leads); a fence that
    refuses the live leader's own write; a state miss reported as a refusal; a refusal that is
    not logged."""
    fence = await _lead(pg_cluster_url)
    vm = await store.pools.create_vm("p", state="ready", now=1.0, fence=fence)
    moved = await store.pools.update_vm(
        vm.name, expect=["ready"], changes={"livecheck_failures": 1}, fence=fence
    )
    assert moved is not None and moved.livecheck_failures == 1  # the leader's own write
    # its fence holds, the row's condition fails: a plain miss
    assert (
        await store.pools.update_vm(
            vm.name, expect=["spawning"], changes={"state": "terminating"}, fence=fence
        )
        is None
    )
    _sql(pg_cluster_url, stale)
    before = await store.pools.get_vm(vm.name)
    with caplog.at_level(logging.ERROR):
        with pytest.raises(exceptions.StaleEpoch, match="epoch 1"):
            await store.pools.update_vm(
                vm.name, expect=["ready"], changes={"state": "terminating"}, fence=fence
            )
        with pytest.raises(exceptions.StaleEpoch):  # any state: still the lease decides
            await store.pools.update_vm(vm.name, expect=None, changes={"reason": "x"}, fence=fence)
    assert await store.pools.get_vm(vm.name) == before
    assert caplog.text.count(f"refused a write of VM {vm.name}") == 2
    # without a fence (an operator's or a client's write on any host) nothing is checked
    assert await store.pools.update_vm(vm.name, expect=None, changes={"reason": "op"}) is not None


async def test_a_ticket_end_under_a_stale_lease_is_refused_and_frees_nothing(
    pg_cluster_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: ``close_ticket`` ignoring its lease fence (a stale leader expires a
    ticket, or fails it after a livecheck, and frees its VM for termination, on a pool another
    host leads); a fence that refuses the live leader's own expiry."""
    fence = await _lead(pg_cluster_url)
    vms = [await store.pools.create_vm("p", state="ready", now=1.0) for _ in range(2)]
    for i, vm in enumerate(vms):
        await store.pools.insert_ticket(_ticket(f"t{i}"))
        assert await store.pools.assign(f"t{i}", vm.name, now=2.0)
    ended = await store.pools.close_ticket(
        "t0", expect=["assigned"], state="expired", vm_state="terminating", now=9.0, fence=fence
    )
    assert ended is not None and ended.vm is not None and ended.vm.state == "terminating"
    _sql(pg_cluster_url, MOVE_LEASE)
    ticket, vm = await store.pools.get_ticket("t1"), await store.pools.get_vm(vms[1].name)
    with caplog.at_level(logging.ERROR), pytest.raises(exceptions.StaleEpoch):
        await store.pools.close_ticket(
            "t1", expect=["assigned"], state="expired", vm_state="terminating", now=9.0, fence=fence
        )
    assert await store.pools.get_ticket("t1") == ticket
    assert await store.pools.get_vm(vms[1].name) == vm
    assert "refused the end of ticket t1" in caplog.text


async def test_vm_writes_under_a_freed_lock_grant_are_refused(
    pg_cluster_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: ``update_vm`` ignoring a lock fence (a task whose grant of the VM's
    lock was freed — its host's lease lapsed, a survivor took the task — still moves the VM);
    a check by key alone (an old token passes while a newer grant holds the key); a fence that
    refuses the holder's own write."""
    from corral.locks.pg import PgLockManager

    vm = await store.pools.create_vm("p", state="spawning", now=1.0)
    key = f"vm/{vm.name}"
    async with PgLockManager(pg_cluster_url, host_id="h1", lease=15.0) as locks:
        held = await locks.acquire({key: "exclusive"}, owner="task-1")
        old = LockFence(key, held.token(key))
        moved = await store.pools.update_vm(
            vm.name, expect=["spawning"], changes={"handle": "h"}, fence=old
        )
        assert moved is not None and moved.handle == "h"
        held.release()
        with caplog.at_level(logging.ERROR), pytest.raises(exceptions.StaleToken):
            await store.pools.update_vm(
                vm.name, expect=["spawning"], changes={"state": "ready"}, fence=old
            )
        again = await locks.acquire({key: "exclusive"}, owner="task-2")
        new = LockFence(key, again.token(key))
        assert new.token > old.token
        with pytest.raises(exceptions.StaleToken):  # the key is held, by a newer grant
            await store.pools.update_vm(
                vm.name, expect=["spawning"], changes={"state": "ready"}, fence=old
            )
        row = await store.pools.get_vm(vm.name)
        assert row is not None and row.state == "spawning"
        assert caplog.text.count(f"refused a write of VM {vm.name}") == 2
        moved = await store.pools.update_vm(
            vm.name, expect=["spawning"], changes={"state": "ready"}, fence=new
        )
        assert moved is not None and moved.state == "ready"
        again.release()
