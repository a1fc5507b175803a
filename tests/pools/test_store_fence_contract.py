"""The fence arguments of the pools repository on every store (issue 11).

Memory and SQLite stores are single-host: they have no cluster leases and no lock table, so
they accept a fence and write as if none were given. PostgreSQL checks it: a fence naming no
live lease or grant is refused and nothing is written (the cluster tests cover live fences).
"""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.store import Store
from corral.store.pools import LeaseFence, LockFence, TicketRow, WriteFence

FENCES: list[WriteFence] = [LeaseFence("pool/p", "nobody", 7), LockFence("vm/p-000001", 7)]


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


def _checks(store: Store) -> bool:
    return store.url.startswith("postgresql")


@pytest.mark.parametrize("fence", FENCES, ids=["lease", "lock"])
async def test_update_vm_takes_a_fence(store: Store, fence: WriteFence) -> None:
    """Breakages caught: a single-host store rejecting the ``fence`` argument (the controller
    passes one on every store) or refusing the write; PostgreSQL writing under a fence that
    names no live lease or grant."""
    vm = await store.pools.create_vm("p", state="ready", now=1.0)
    if _checks(store):
        with pytest.raises(exceptions.StaleToken):  # StaleEpoch is a StaleToken
            await store.pools.update_vm(
                vm.name, expect=["ready"], changes={"livecheck_failures": 1}, fence=fence
            )
        assert await store.pools.get_vm(vm.name) == vm
        return
    moved = await store.pools.update_vm(
        vm.name, expect=["ready"], changes={"livecheck_failures": 1}, fence=fence
    )
    assert moved is not None and moved.livecheck_failures == 1
    missed = await store.pools.update_vm(vm.name, expect=["spawning"], changes={}, fence=fence)
    assert missed is None


async def test_close_ticket_and_create_vm_take_a_lease_fence(store: Store) -> None:
    """Breakages caught: as above, for a ticket's end and a new VM row."""
    fence = LeaseFence("pool/p", "nobody", 7)
    await store.pools.insert_ticket(_ticket("t1"))
    if _checks(store):
        with pytest.raises(exceptions.StaleEpoch):
            await store.pools.create_vm("p", state="spawning", now=1.0, fence=fence)
        with pytest.raises(exceptions.StaleEpoch):
            await store.pools.close_ticket(
                "t1", expect=["waiting"], state="cancelled", vm_state=None, now=2.0, fence=fence
            )
        row = await store.pools.get_ticket("t1")
        assert row is not None and row.state == "waiting"
        assert await store.pools.list_vms(pool="p") == []
        return
    assert (await store.pools.create_vm("p", state="spawning", now=1.0, fence=fence)).pool == "p"
    closed = await store.pools.close_ticket(
        "t1", expect=["waiting"], state="cancelled", vm_state=None, now=2.0, fence=fence
    )
    assert closed is not None and closed.ticket.state == "cancelled"
