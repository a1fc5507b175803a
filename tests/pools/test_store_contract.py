"""The pools repository contract, run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.store import Store
from corral.store.pools import TicketRow


def _ticket(tid: str, owner: str = "alice", priority: int = 0, **kw: object) -> TicketRow:
    base: dict[str, object] = {
        "id": tid,
        "owner": owner,
        "state": "waiting",
        "created_at": 1.0,
        "expires_at": kw.pop("expires_at", None),
        "pool": "p",
        "tags": ("a", "b"),
        "sandbox": None,
        "priority": priority,
        "ttl": None,
    }
    base.update(kw)
    return TicketRow(**base)  # type: ignore[arg-type]


async def _ready(store: Store, pool: str = "p", now: float = 1.0) -> str:
    vm = await store.pools.create_vm(pool, state="spawning", now=now)
    done = await store.pools.update_vm(
        vm.name,
        expect=["spawning"],
        changes={"state": "ready", "ready_at": now, "address": "10.0.0.1"},
    )
    assert done is not None
    return vm.name


async def test_create_vm_names_and_ids(store: Store) -> None:
    a = await store.pools.create_vm("p", state="spawning", now=1.0)
    b = await store.pools.create_vm("p", state="spawning", now=2.0)
    c = await store.pools.create_vm("q", state="spawning", now=3.0)
    assert (a.name, b.name, c.name) == ("p-000001", "p-000002", "q-000001")
    assert (a.id_in_pool, b.id_in_pool, c.id_in_pool) == (0, 1, 0)
    await store.pools.update_vm(a.name, expect=None, changes={"state": "failed"})
    d = await store.pools.create_vm("p", state="spawning", now=4.0)
    assert d.name == "p-000003" and d.id_in_pool == 0  # the freed id is reused, the name never
    assert await store.pools.count_vms("p") == {"failed": 1, "spawning": 2}
    assert [v.name for v in await store.pools.list_vms(pool="p", states=["spawning"])] == [
        b.name,
        d.name,
    ]


async def test_update_vm_is_conditional_and_checks_columns(store: Store) -> None:
    vm = await store.pools.create_vm("p", state="spawning", now=1.0)
    assert await store.pools.update_vm(vm.name, expect=["ready"], changes={"uses": 3}) is None
    moved = await store.pools.update_vm(vm.name, expect=["spawning"], changes={"state": "ready"})
    assert moved is not None and moved.state == "ready"
    with pytest.raises(exceptions.InvalidInput):
        await store.pools.update_vm(vm.name, expect=None, changes={"pool": "x"})
    assert (await store.pools.get_vm(vm.name)) == moved
    assert await store.pools.get_vm("nope") is None
    assert not await store.pools.delete_vm(vm.name)  # alive: kept
    await store.pools.update_vm(vm.name, expect=None, changes={"state": "terminated"})
    assert await store.pools.delete_vm(vm.name)


async def test_assign_is_conditional(store: Store) -> None:
    name = await _ready(store)
    t1 = await store.pools.insert_ticket(_ticket("t1"))
    t2 = await store.pools.insert_ticket(_ticket("t2", sandbox="s"))
    assert t2.seq > t1.seq
    with pytest.raises(exceptions.Conflict):
        await store.pools.insert_ticket(_ticket("t1"))
    assert await store.pools.assign("t1", name, now=5.0)
    assert not await store.pools.assign("t2", name, now=5.0)  # VM taken
    vm = await store.pools.get_vm(name)
    assert vm is not None and vm.state == "in_use" and vm.ticket == "t1" and vm.uses == 1
    t2_after = await store.pools.get_ticket("t2")
    assert t2_after is not None and t2_after.state == "waiting" and t2_after.vm is None
    assert await store.pools.held() == {("alice", "p"): 1}
    other = await _ready(store)
    assert not await store.pools.assign("t1", other, now=6.0)  # ticket no longer waiting
    assert (await store.pools.get_vm(other)).state == "ready"  # type: ignore[union-attr]
    assert not await store.pools.assign("t2", other, now=6.0, max_per_owner=1)  # owner limit
    assert await store.pools.assign("t2", other, now=6.0, max_per_owner=2)


async def test_concurrent_assign_gives_each_vm_once(store: Store) -> None:
    names = [await _ready(store) for _ in range(5)]
    for i in range(20):
        await store.pools.insert_ticket(_ticket(f"t{i}", owner=f"o{i}"))
    attempts = [store.pools.assign(f"t{i}", names[i % 5], now=2.0) for i in range(20)]
    results = await asyncio.gather(*attempts)
    assert sum(results) == 5
    owners = {(await store.pools.get_vm(n)).ticket for n in names}  # type: ignore[union-attr]
    assert len(owners) == 5


async def test_close_ticket_frees_vm_in_one_step(store: Store) -> None:
    name = await _ready(store)
    await store.pools.insert_ticket(_ticket("t1", sandbox="s1"))
    await store.pools.assign("t1", name, now=2.0)
    assert (
        await store.pools.close_ticket(
            "t1", expect=["waiting"], state="cancelled", vm_state=None, now=3.0
        )
        is None
    )
    closed = await store.pools.close_ticket(
        "t1", expect=["assigned"], state="closed", vm_state="releasing", now=3.0
    )
    assert closed is not None and closed.ticket.state == "closed" and closed.ticket.closed_at == 3.0
    assert closed.vm is not None and closed.vm.state == "releasing" and closed.vm.ticket is None
    assert closed.vm.sandbox == "s1"
    assert await store.pools.held() == {}
    back = await store.pools.update_vm(name, expect=["releasing"], changes={"state": "ready"})
    assert back is not None
    assert [v.name for v in await store.pools.ready_vms("p", sandbox="s1", limit=5)] == [name]
    assert await store.pools.ready_vms("p", sandbox=None, limit=5) == []


async def test_ticket_listing_order_and_expiry(store: Store) -> None:
    await store.pools.insert_ticket(_ticket("low", priority=0, expires_at=10.0))
    await store.pools.insert_ticket(_ticket("high", priority=5, expires_at=30.0))
    await store.pools.insert_ticket(_ticket("bob", owner="bob", priority=5))
    rows = await store.pools.list_tickets(states=["waiting"])
    assert [r.id for r in rows] == ["high", "bob", "low"]
    assert [r.id for r in await store.pools.list_tickets(owner="bob")] == ["bob"]
    assert [r.id for r in await store.pools.list_tickets(expired_before=20.0)] == ["low"]
    renewed = await store.pools.update_ticket("low", expect=["waiting"], changes={"expires_at": 50})
    assert renewed is not None and renewed.expires_at == 50
    assert await store.pools.update_ticket("low", expect=["assigned"], changes={}) is None
    assert (await store.pools.get_ticket("high")).tags == ("a", "b")  # type: ignore[union-attr]


async def test_info_samples_counters(store: Store) -> None:
    await store.pools.set_info("p", "note", '"hello"')
    await store.pools.set_info("p", "note", '"again"')
    await store.pools.set_info("p", "gone", "1")
    await store.pools.set_info("p", "gone", None)
    assert await store.pools.get_info("p") == {"note": '"again"'}
    for i in range(5):
        await store.pools.add_sample("p", "spawn_time", float(i), at=float(i))
    assert await store.pools.samples("p", "spawn_time", limit=3) == [2.0, 3.0, 4.0]
    await store.pools.bump("p", "spawn_failures")
    await store.pools.bump("p", "spawn_failures", 2)
    assert await store.pools.counters("p") == {"spawn_failures": 3}


async def test_record_stats_in_one_call(store: Store) -> None:
    await store.pools.record_stats(
        [("p", "wait_time", 0.5, 1.0), ("p", "wait_time", 0.7, 2.0)],
        {("p", "spawn_attempts"): 3, ("q", "spawn_failures"): 1},
    )
    await store.pools.record_stats([], {("p", "spawn_attempts"): 2})
    assert await store.pools.samples("p", "wait_time", limit=10) == [0.5, 0.7]
    assert await store.pools.counters("p") == {"spawn_attempts": 5}
    assert await store.pools.counters("q") == {"spawn_failures": 1}


async def test_allocation_inputs_and_pool_snapshot_are_bounded_reads(store: Store) -> None:
    fresh = [await _ready(store) for _ in range(5)]
    used = await _ready(store)
    await store.pools.update_vm(used, expect=None, changes={"uses": 1, "sandbox": "s1"})
    await _ready(store, pool="q")
    await store.pools.insert_ticket(_ticket("t1", sandbox="s1"))
    await store.pools.insert_ticket(_ticket("t2", tags=("zzz",)))  # fits no pool
    inputs = await store.pools.allocation_inputs({"p": frozenset({"a", "b"}), "q": frozenset()})
    assert [t.id for t in inputs.waiting] == ["t1", "t2"]
    # one ticket fits p: one fresh VM (the longest ready) and one of its sandbox
    assert sorted(v.name for v in inputs.ready) == sorted([fresh[0], used])
    assert inputs.held == {}
    snap = await store.pools.pool_snapshot("p")
    assert snap.counts == {"ready": 6}
    assert [t.id for t in snap.waiting] == ["t1", "t2"] and snap.held == {}
    assert not snap.blocked
    # a saturated pool reads its counts and nothing more, in the same unit
    seen: list[dict[str, int]] = []
    blocked = await store.pools.pool_snapshot("p", unless=lambda c: seen.append(dict(c)) or True)
    assert seen == [{"ready": 6}] and blocked.blocked
    assert (blocked.counts, blocked.waiting, blocked.idle_used) == ({"ready": 6}, (), ())
    free = await store.pools.pool_snapshot("p", unless=lambda c: False)
    assert not free.blocked and [t.id for t in free.waiting] == ["t1", "t2"]
    await store.pools.close_ticket(
        "t1", expect=["waiting"], state="cancelled", vm_state=None, now=2
    )
    await store.pools.close_ticket(
        "t2", expect=["waiting"], state="cancelled", vm_state=None, now=2
    )
    empty = await store.pools.allocation_inputs({"p": frozenset({"a", "b"})})
    assert empty.waiting == () and empty.ready == ()


async def test_purge_forgets_old_history_only(store: Store) -> None:
    old = await _ready(store, now=1.0)
    await store.pools.update_vm(
        old, expect=None, changes={"state": "terminated", "state_since": 5.0}
    )
    recent = await _ready(store, now=1.0)
    await store.pools.update_vm(
        recent, expect=None, changes={"state": "failed", "state_since": 50.0}
    )
    alive = await _ready(store, now=1.0)
    await store.pools.insert_ticket(_ticket("done"))
    await store.pools.close_ticket(
        "done", expect=["waiting"], state="cancelled", vm_state=None, now=5.0
    )
    await store.pools.insert_ticket(_ticket("open"))
    assert await store.pools.purge(10.0) == (1, 1)
    assert await store.pools.get_vm(old) is None
    assert await store.pools.get_vm(recent) is not None and await store.pools.get_vm(alive)
    assert await store.pools.get_ticket("done") is None
    assert await store.pools.get_ticket("open") is not None
    assert (await store.pools.count_vms("p")) == {"failed": 1, "ready": 1}


async def test_vms_issued_counts_every_name_ever_given(store: Store) -> None:
    # reconciliation tells the store's own machines from foreign ones by it (pools/restart.py)
    assert await store.pools.vms_issued("p") == 0
    first = await _ready(store, now=1.0)
    await store.pools.create_vm("p", state="spawning", now=2.0)
    assert await store.pools.vms_issued("p") == 2
    assert await store.pools.vms_issued("q") == 0
    await store.pools.update_vm(first, expect=None, changes={"state": "failed", "state_since": 1})
    await store.pools.delete_vm(first)
    await store.pools.purge(100.0)
    assert await store.pools.vms_issued("p") == 2  # forgetting rows forgets no name


async def test_ticket_metadata_is_kept_and_searchable(store: Store) -> None:
    meta = (("build", "42"), ("chroot", "fedora-41-x86_64"), ("task", "123"))
    stored = await store.pools.insert_ticket(_ticket("m1", meta=meta))
    assert stored.meta == meta
    await store.pools.insert_ticket(_ticket("m2", meta=(("task", "124"),)))
    await store.pools.insert_ticket(_ticket("m3"))
    got = await store.pools.get_ticket("m1")
    assert got is not None and got.meta == meta
    assert [t.id for t in await store.pools.list_tickets(meta={"task": "123"})] == ["m1"]
    found = await store.pools.list_tickets(meta={"task": "123", "chroot": "fedora-41-x86_64"})
    assert [t.id for t in found] == ["m1"]
    assert await store.pools.list_tickets(meta={"task": "123", "chroot": "other"}) == []
    assert await store.pools.list_tickets(meta={"nope": "x"}) == []
    assert len(await store.pools.list_tickets()) == 3
    # the search rows go with their ticket when the history is purged
    await store.pools.close_ticket(
        "m1", expect=["waiting"], state="cancelled", vm_state=None, now=5.0
    )
    assert await store.pools.purge(10.0) == (0, 1)
    assert await store.pools.list_tickets(meta={"task": "123"}) == []
    await store.pools.insert_ticket(_ticket("m4", meta=(("task", "123"),)))
    assert [t.id for t in await store.pools.list_tickets(meta={"task": "123"})] == ["m4"]


async def test_pool_modes_and_the_audit_trail(store: Store) -> None:
    from corral.store.pools import AuditEntry

    assert await store.pools.pool_modes() == {}
    await store.pools.set_pool_mode("p", "paused")
    await store.pools.set_pool_mode("q", "draining")
    await store.pools.create_vm("q", state="spawning", now=1.0)  # the pool row exists already
    assert await store.pools.pool_modes() == {"p": "paused", "q": "draining"}
    await store.pools.set_pool_mode("p", None)
    assert await store.pools.pool_modes() == {"q": "draining"}
    for i, (kind, target) in enumerate([("vm", "p-1"), ("pool", "p"), ("vm", "p-1")]):
        await store.pools.add_audit(AuditEntry(float(i), "alice", f"a{i}", kind, target, None))
    found = await store.pools.list_audit(kind="vm", target="p-1")
    assert [e.action for e in found] == ["a2", "a0"]
    assert [e.action for e in await store.pools.list_audit(limit=1)] == ["a2"]
    assert (await store.pools.list_audit(kind="pool"))[0] == AuditEntry(
        1.0, "alice", "a1", "pool", "p", None
    )


async def test_a_vm_marked_to_be_held_is_held_when_its_ticket_closes(store: Store) -> None:
    name = await _ready(store)
    await store.pools.insert_ticket(_ticket("h"))
    assert await store.pools.assign("h", name, now=2.0)
    await store.pools.update_vm(name, expect=["in_use"], changes={"hold_until": 100.0})
    closed = await store.pools.close_ticket(
        "h", expect=["assigned"], state="closed", vm_state="terminating", now=3.0
    )
    assert closed is not None and closed.vm is not None
    assert closed.vm.state == "held" and closed.vm.hold_until == 100.0 and closed.vm.ticket is None
