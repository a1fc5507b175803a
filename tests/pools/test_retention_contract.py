"""Retention in every store (issue 12): purges in bounded batches, the audit trail pruned.

What each test catches: a ``limit`` ignored (one statement deleting weeks of history at once);
a batch deleting a ticket's row but not its metadata rows (or the other way round); recent
history or open tickets deleted; the audit trail never pruned, or pruned newest first.
"""

from __future__ import annotations

from corral.store import Store
from corral.store.pools import AuditEntry

from .test_store_contract import _ready, _ticket


async def test_purge_in_bounded_batches(store: Store) -> None:
    for _ in range(5):
        name = await _ready(store)
        await store.pools.update_vm(name, expect=None, changes={"state": "terminated"})
    for i in range(3):
        await store.pools.insert_ticket(_ticket(f"t{i}", meta=(("k", "v"),)))
        await store.pools.close_ticket(
            f"t{i}", expect=["waiting"], state="cancelled", vm_state=None, now=2.0
        )
    await store.pools.insert_ticket(_ticket("open", meta=(("k", "v"),)))
    assert await store.pools.purge(10.0, limit=2) == (2, 2)
    assert await store.pools.purge(10.0, limit=2) == (2, 1)
    assert await store.pools.purge(10.0, limit=2) == (1, 0)
    assert await store.pools.purge(10.0, limit=2) == (0, 0)
    assert [t.id for t in await store.pools.list_tickets(meta={"k": "v"})] == ["open"]
    assert await store.pools.count_vms("p") == {}


async def test_audit_trail_pruned_oldest_first(store: Store) -> None:
    for at in (1.0, 2.0, 3.0, 20.0):
        await store.pools.add_audit(AuditEntry(at, "root", "hold", "vm", f"vm-{at:g}"))
    assert await store.pools.purge_audit(10.0, limit=2) == 2
    assert [e.target for e in await store.pools.list_audit()] == ["vm-20", "vm-3"]
    assert await store.pools.purge_audit(10.0) == 1
    assert await store.pools.purge_audit(10.0) == 0
    assert [e.target for e in await store.pools.list_audit()] == ["vm-20"]
