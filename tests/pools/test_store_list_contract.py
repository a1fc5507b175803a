"""The store's list tickets (issue 15), on memory, SQLite and PostgreSQL.

A list ticket's VMs may be of several pools; ``assign_many`` gives them all in one transaction
or none, within each pool's ``max_per_owner`` (``owner_limits``). Each test names the breakage
it catches.
"""

from __future__ import annotations

import asyncio

from corral.store import Store
from corral.store.pools import TicketRow

ENTRIES = (("p", (), 2), (None, ("s390x",), 1))


def _ticket(tid: str, owner: str = "alice", **kw: object) -> TicketRow:
    base: dict[str, object] = {
        "id": tid,
        "owner": owner,
        "state": "waiting",
        "created_at": 1.0,
        "expires_at": None,
        "pool": None,
        "tags": (),
        "sandbox": None,
        "priority": 0,
        "ttl": None,
        "count": 3,
        "requests": ENTRIES,
    }
    base.update(kw)
    return TicketRow(**base)  # type: ignore[arg-type]


async def _ready(store: Store, pool: str) -> str:
    vm = await store.pools.create_vm(pool, state="spawning", now=1.0)
    done = await store.pools.update_vm(
        vm.name, expect=["spawning"], changes={"state": "ready", "ready_at": 1.0}
    )
    assert done is not None
    return vm.name


async def test_a_list_ticket_round_trips_and_takes_vms_of_several_pools(store: Store) -> None:
    """Breakages caught: ``requests`` not stored (read back empty), VMs of several pools
    refused (the one-pool rule of ``count``), held counted all in the first VM's pool."""
    p1, p2, q1 = await _ready(store, "p"), await _ready(store, "p"), await _ready(store, "q")
    row = await store.pools.insert_ticket(_ticket("t"))
    assert row.requests == ENTRIES
    got = await store.pools.get_ticket("t")
    assert got is not None and got.requests == ENTRIES and got.count == 3
    listed = await store.pools.list_tickets(states=["waiting"])
    assert [t.requests for t in listed] == [ENTRIES]
    assert await store.pools.assign_many("t", [(p1, 0), (p2, 0), (q1, 0)], now=2.0)
    got = await store.pools.get_ticket("t")
    assert got is not None and got.state == "assigned" and got.vms == (p1, p2, q1)
    for name in (p1, p2, q1):
        vm = await store.pools.get_vm(name)
        assert vm is not None and vm.state == "in_use" and vm.ticket == "t"
    assert await store.pools.held() == {("alice", "p"): 2, ("alice", "q"): 1}
    snapshot = await store.pools.pool_snapshot("p")
    assert snapshot.held == {("alice", "p"): 2, ("alice", "q"): 1}
    closed = await store.pools.close_ticket(
        "t", expect=["assigned"], state="closed", vm_state="terminating", now=3.0
    )
    assert closed is not None
    freed = {v.name for v in (closed.vm, *closed.others) if v is not None}
    assert freed == {p1, p2, q1}
    assert await store.pools.held() == {}


async def test_a_list_assignment_is_all_or_nothing(store: Store) -> None:
    """Breakages caught: the free VMs taken when one of them is not (a partial assignment), a
    count that does not match the ticket's accepted, a shared VM joined by a list ticket."""
    p1, p2, q1 = await _ready(store, "p"), await _ready(store, "p"), await _ready(store, "q")
    await store.pools.insert_ticket(_ticket("other", pool="q", requests=(), count=1))
    assert await store.pools.assign("other", q1, now=2.0)
    await store.pools.insert_ticket(_ticket("t"))
    assert not await store.pools.assign_many("t", [(p1, 0), (p2, 0), (q1, 0)], now=3.0)
    assert not await store.pools.assign_many("t", [(p1, 0), (p2, 0)], now=3.0)  # 2 of 3
    assert not await store.pools.assign_many("t", [(p1, 0), (p2, 0), (q1, 1)], now=3.0)
    for name in (p1, p2):
        vm = await store.pools.get_vm(name)
        assert vm is not None and vm.state == "ready" and vm.ticket is None
    t = await store.pools.get_ticket("t")
    assert t is not None and t.state == "waiting" and t.vm is None and t.vms == ()
    q2 = await _ready(store, "q")
    assert await store.pools.assign_many("t", [(p1, 0), (p2, 0), (q2, 0)], now=4.0)


async def test_max_per_owner_holds_per_pool_for_list_tickets(store: Store) -> None:
    """``owner_limits`` counts each pool's machines (this ticket's and those held). Breakage
    caught: the limit checked against one pool only, or not at all."""
    names = [await _ready(store, "p") for _ in range(3)] + [await _ready(store, "q")]
    await store.pools.insert_ticket(_ticket("one", pool="p", requests=(), count=1))
    assert await store.pools.assign("one", names[0], now=2.0)
    await store.pools.insert_ticket(_ticket("t"))
    chosen = [(names[1], 0), (names[2], 0), (names[3], 0)]
    assert not await store.pools.assign_many("t", chosen, now=3.0, owner_limits={"p": 2})
    assert not await store.pools.assign_many("t", chosen, now=3.0, owner_limits={"q": 0})
    assert (await store.pools.get_ticket("t")).state == "waiting"  # type: ignore[union-attr]
    assert await store.pools.assign_many("t", chosen, now=3.0, owner_limits={"p": 3, "q": 1})
    assert await store.pools.held() == {("alice", "p"): 3, ("alice", "q"): 1}


async def test_concurrent_list_tickets_never_share_a_vm(store: Store) -> None:
    """Two list tickets race for overlapping VMs: exactly one wins, whole. Breakage caught: a
    VM written without its row lock and condition (both tickets assigned)."""
    p1, p2, q1 = await _ready(store, "p"), await _ready(store, "p"), await _ready(store, "q")
    p3 = await _ready(store, "p")
    await store.pools.insert_ticket(_ticket("t1"))
    await store.pools.insert_ticket(_ticket("t2", owner="bob"))
    results = await asyncio.gather(
        store.pools.assign_many("t1", [(p1, 0), (p2, 0), (q1, 0)], now=2.0),
        store.pools.assign_many("t2", [(p3, 0), (p2, 0), (q1, 0)], now=2.0),
    )
    assert sorted(results) == [False, True]
    winner = "t1" if results[0] else "t2"
    for name in (p2, q1):
        vm = await store.pools.get_vm(name)
        assert vm is not None and vm.tickets == (winner,)
    loser = await store.pools.get_ticket("t2" if results[0] else "t1")
    assert loser is not None and loser.state == "waiting"
