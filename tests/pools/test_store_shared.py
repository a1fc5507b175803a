"""The store's shared-VM and multi-machine assignment, on memory, SQLite and PostgreSQL.

The atomic write is ``assign_many``: every VM conditional on its ticket count, all or nothing.
Each test names the breakage it catches.
"""

from __future__ import annotations

import asyncio
import random

from corral.store import Store
from corral.store.pools import TicketRow


def _ticket(tid: str, owner: str = "alice", **kw: object) -> TicketRow:
    base: dict[str, object] = {
        "id": tid,
        "owner": owner,
        "state": "waiting",
        "created_at": 1.0,
        "expires_at": None,
        "pool": "p",
        "tags": (),
        "sandbox": None,
        "priority": 0,
        "ttl": None,
    }
    base.update(kw)
    return TicketRow(**base)  # type: ignore[arg-type]


async def _ready(store: Store, pool: str = "p") -> str:
    vm = await store.pools.create_vm(pool, state="spawning", now=1.0)
    done = await store.pools.update_vm(
        vm.name, expect=["spawning"], changes={"state": "ready", "ready_at": 1.0}
    )
    assert done is not None
    return vm.name


async def test_a_shared_vm_counts_its_tickets(store: Store) -> None:
    """Three tickets share a 3-slot VM; a fourth, a stale count, another sandbox or an
    exclusive ticket is refused. Breakages caught: a join not conditional on the count (a
    stale ``load`` accepted: a 4th ticket), no ``load + 1 <= slots`` check, joins across
    sandboxes, an exclusive ticket joining."""
    vm = await _ready(store)
    for i in range(6):
        await store.pools.insert_ticket(_ticket(f"t{i}", owner=f"o{i % 2}"))
    await store.pools.insert_ticket(_ticket("sb", sandbox="s"))
    await store.pools.insert_ticket(_ticket("ex", exclusive=True))
    assert await store.pools.assign_many("t0", [(vm, 0)], now=2.0, slots=3)
    assert not await store.pools.assign_many("t1", [(vm, 0)], now=2.0, slots=3)  # stale count
    assert await store.pools.assign_many("t1", [(vm, 1)], now=2.0, slots=3)
    assert not await store.pools.assign_many("sb", [(vm, 2)], now=2.0, slots=3)  # other sandbox
    assert not await store.pools.assign_many("ex", [(vm, 2)], now=2.0, slots=3)  # exclusive
    assert await store.pools.assign_many("t2", [(vm, 2)], now=2.0, slots=3)
    assert not await store.pools.assign_many("t3", [(vm, 3)], now=2.0, slots=3)  # full
    assert not await store.pools.assign_many("t3", [(vm, 2)], now=2.0, slots=3)  # stale
    row = await store.pools.get_vm(vm)
    assert row is not None and row.state == "in_use"
    assert (row.load, row.tickets, row.ticket, row.uses) == (3, ("t0", "t1", "t2"), "t0", 3)
    assert await store.pools.held() == {("o0", "p"): 2, ("o1", "p"): 1}
    assert [v.name for v in await store.pools.list_vms(ticket="t1")] == [vm]
    for tid in ("t3", "sb", "ex"):
        assert (await store.pools.get_ticket(tid)).state == "waiting"  # type: ignore[union-attr]


async def test_the_vm_is_free_only_when_its_last_ticket_closes(store: Store) -> None:
    """Breakages caught: freeing a shared VM when its first ticket closes (the others would
    lose it), and not counting down (the VM never frees)."""
    vm = await _ready(store)
    for i in range(3):
        await store.pools.insert_ticket(_ticket(f"t{i}", owner=f"o{i}"))
        assert await store.pools.assign_many(f"t{i}", [(vm, i)], now=2.0, slots=3)
    closed = await store.pools.close_ticket(
        "t0", expect=["assigned"], state="closed", vm_state="terminating", now=3.0
    )
    assert closed is not None and closed.vm is None and closed.ticket.state == "closed"
    row = await store.pools.get_vm(vm)
    assert row is not None and row.state == "in_use"
    assert (row.load, row.tickets, row.ticket, row.owner) == (2, ("t1", "t2"), "t1", "o1")
    assert await store.pools.held() == {("o1", "p"): 1, ("o2", "p"): 1}
    closed = await store.pools.close_ticket(
        "t2", expect=["assigned"], state="expired", vm_state="terminating", now=4.0
    )
    assert closed is not None and closed.vm is None
    closed = await store.pools.close_ticket(
        "t1", expect=["assigned"], state="closed", vm_state="terminating", now=5.0
    )
    assert closed is not None and closed.vm is not None
    assert closed.vm.state == "terminating"
    assert (closed.vm.load, closed.vm.tickets, closed.vm.ticket) == (0, (), None)
    assert await store.pools.held() == {}


async def test_an_exclusive_ticket_shares_with_none(store: Store) -> None:
    """Breakage caught: the exclusive mark not written (a shared ticket joins it)."""
    vm = await _ready(store)
    await store.pools.insert_ticket(_ticket("ex", exclusive=True))
    await store.pools.insert_ticket(_ticket("sh"))
    assert await store.pools.assign_many("ex", [(vm, 0)], now=2.0, slots=3)
    assert not await store.pools.assign_many("sh", [(vm, 1)], now=2.0, slots=3)
    row = await store.pools.get_vm(vm)
    assert row is not None and row.exclusive and row.load == 1
    await store.pools.close_ticket(
        "ex", expect=["assigned"], state="closed", vm_state="releasing", now=3.0
    )
    row = await store.pools.get_vm(vm)
    assert row is not None and not row.exclusive and row.load == 0


async def test_a_multi_machine_assignment_is_all_or_nothing(store: Store) -> None:
    """Breakages caught: writing the VMs one by one without checking all first (the first two
    stay taken when the third is not free), and a multi-machine ticket counted once against
    ``max_per_owner``."""
    a, b, c = [await _ready(store) for _ in range(3)]
    await store.pools.insert_ticket(_ticket("other", owner="bob"))
    await store.pools.insert_ticket(_ticket("big", count=3))
    await store.pools.insert_ticket(_ticket("one"))
    assert await store.pools.assign("other", c, now=2.0)
    assert not await store.pools.assign_many("big", [(a, 0), (b, 0)], now=3.0)  # 2 of 3
    assert not await store.pools.assign_many("big", [(a, 0), (b, 0), (c, 0)], now=3.0)
    for name in (a, b):
        row = await store.pools.get_vm(name)
        assert row is not None and row.state == "ready" and row.load == 0 and row.ticket is None
    assert (await store.pools.get_ticket("big")).state == "waiting"  # type: ignore[union-attr]
    await store.pools.close_ticket(
        "other", expect=["assigned"], state="closed", vm_state="terminating", now=4.0
    )
    d, e = await _ready(store), await _ready(store)
    assert await store.pools.assign("one", d, now=4.5)  # alice holds one machine
    chosen = [(a, 0), (b, 0), (e, 0)]
    assert not await store.pools.assign_many("big", chosen, now=5.0, max_per_owner=3)
    assert await store.pools.assign_many("big", chosen, now=5.0, max_per_owner=4)
    ticket = await store.pools.get_ticket("big")
    assert ticket is not None and ticket.state == "assigned"
    assert (ticket.vm, ticket.vms, ticket.count) == (a, (a, b, e), 3)
    assert await store.pools.held() == {("alice", "p"): 4}
    closed = await store.pools.close_ticket(
        "big", expect=["assigned"], state="closed", vm_state="terminating", now=6.0
    )
    assert closed is not None and closed.vm is not None and closed.vm.name == a
    assert [v.name for v in closed.others] == [b, e]
    assert all(v.state == "terminating" and v.ticket is None for v in (closed.vm, *closed.others))


async def test_concurrent_multi_machine_and_shared_assignments(store: Store) -> None:
    """Many tickets race for a small pool with overlapping multi-machine and shared requests
    (several PostgreSQL connections at once): no VM ends with more tickets than its slots or
    a ticket it does not list, an assigned ticket has every VM it names, an unassigned one
    none. Breakages caught: the count condition dropped (over-full VMs), locking VMs in the
    request's order (PostgreSQL deadlocks), a partial multi-machine write."""
    rng = random.Random(7)
    names = [await _ready(store) for _ in range(4)]
    for round_ in range(3):
        tickets = []
        for i in range(12):
            tid = f"r{round_}-{i}"
            count = rng.choice([1, 2, 3])
            await store.pools.insert_ticket(_ticket(tid, owner=f"o{i % 3}", count=count))
            tickets.append((tid, rng.sample(names, count)))
        rows = {n: await store.pools.get_vm(n) for n in names}
        attempts = [
            store.pools.assign_many(
                tid,
                [(n, rows[n].load) for n in chosen],  # type: ignore[union-attr]
                now=2.0,
                slots=2,
            )
            for tid, chosen in tickets
        ]
        results = await asyncio.gather(*attempts)
        holding: dict[str, list[str]] = {n: [] for n in names}
        for (tid, chosen), ok in zip(tickets, results, strict=True):
            ticket = await store.pools.get_ticket(tid)
            assert ticket is not None
            assert ticket.state == ("assigned" if ok else "waiting")
            if ok:
                assert list(ticket.vms or (ticket.vm,)) == chosen
                for n in chosen:
                    holding[n].append(tid)
        for n in names:
            row = await store.pools.get_vm(n)
            assert row is not None
            assert row.load <= 2
            new = [t for t in row.tickets if t.startswith(f"r{round_}-")]
            assert sorted(new) == sorted(holding[n])
