"""The pools repository's part of issue 15 (register a machine made elsewhere, keep a forgotten
VM's tombstone), run against memory, SQLite and PostgreSQL."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.store import Store


async def test_register_vm_records_a_ready_external_vm(store: Store) -> None:
    """Breakage caught: a store that drops ``external`` (the flag that makes retirement forget
    rather than destroy), records another state, or takes a name from the pool's counter."""
    spawned = await store.pools.create_vm("p", state="spawning", now=1.0)
    row = await store.pools.register_vm(
        "p", "builder-7", address="10.1.2.3", handle='{"name": "builder-7", "ref": ""}', now=2.0
    )
    assert (row.name, row.pool, row.state, row.external) == ("builder-7", "p", "ready", True)
    assert (row.address, row.ready_at, row.uses, row.ticket) == ("10.1.2.3", 2.0, 0, None)
    assert row.id_in_pool == 1  # the smallest id no alive VM of the pool holds
    assert await store.pools.get_vm("builder-7") == row
    assert await store.pools.vms_issued("p") == 1  # the counter is the pool's own names only
    assert (await store.pools.get_vm(spawned.name)).external is False  # type: ignore[union-attr]
    ready = await store.pools.ready_vms("p", sandbox=None, limit=5)
    assert [v.name for v in ready] == ["builder-7"]  # it serves like any fresh ready VM


async def test_register_vm_refuses_a_recorded_name_and_changes_nothing(store: Store) -> None:
    """Breakage caught: an insert that overwrites an existing VM (of any state, also a dead
    one's record) instead of refusing it."""
    taken = await store.pools.create_vm("p", state="spawning", now=1.0)
    with pytest.raises(exceptions.Conflict):
        await store.pools.register_vm("q", taken.name, address="10.0.0.9", handle="{}", now=2.0)
    after = await store.pools.get_vm(taken.name)
    assert after is not None and (after.pool, after.state, after.external) == (
        "p",
        "spawning",
        False,
    )
    await store.pools.register_vm("p", "m1", address="10.0.0.1", handle="{}", now=1.0)
    await store.pools.update_vm("m1", expect=None, changes={"state": "forgotten"})
    with pytest.raises(exceptions.Conflict):
        await store.pools.register_vm("p", "m1", address="10.0.0.2", handle="{}", now=3.0)


async def test_external_is_an_updatable_column(store: Store) -> None:
    """Forget marks a VM external in its conditional write. Breakage caught: ``external``
    missing from ``VM_COLUMNS`` (refused) or not persisted."""
    vm = await store.pools.create_vm("p", state="ready", now=1.0)
    moved = await store.pools.update_vm(
        vm.name, expect=["ready"], changes={"state": "terminating", "external": True}
    )
    assert moved is not None and moved.external is True
    again = await store.pools.get_vm(vm.name)
    assert again is not None and again.external is True and again.state == "terminating"


async def test_purge_keeps_forgotten_tombstones(store: Store) -> None:
    """A forgotten VM's record is what keeps the leak sweep from terminating its machine.
    Breakage caught: retention's purge deleting ``forgotten`` records with the other dead ones
    (the next sweep would then terminate a machine corral let go of)."""
    gone = await store.pools.create_vm("p", state="spawning", now=1.0)
    kept = await store.pools.create_vm("p", state="spawning", now=1.0)
    await store.pools.update_vm(gone.name, expect=None, changes={"state": "terminated"})
    await store.pools.update_vm(kept.name, expect=None, changes={"state": "forgotten"})
    vms, _ = await store.pools.purge(1e12)
    assert vms == 1
    assert await store.pools.get_vm(gone.name) is None
    tombstone = await store.pools.get_vm(kept.name)
    assert tombstone is not None and tombstone.state == "forgotten"
