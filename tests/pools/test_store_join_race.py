"""The concurrent-join race of a shared VM (``slots``), made deterministic at the store level.

Two stores on one SQLite or PostgreSQL database (two connection pools, as two hosts have)
both decide from the same read that a 2-slot VM holding one ticket has room, and each writes
a join for its own ticket. Only the first write may land: the second is conditional on the
load it read. The chaos tests rarely provoke this interleaving; here it happens every time.

Breakage caught (checked by hand, both databases fail): removing the load check of the
conditional write in ``corral/store/sql/pools.py`` (``_may_take``'s ``vm.load != load`` and the
join's ``WHERE load = :b_load``) lets both joins land: three tickets on a 2-slot VM. Either
check alone keeps this test green (a single join is checked twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.store import Store, open_store
from corral.store.pools import TicketRow


def _ticket(tid: str) -> TicketRow:
    return TicketRow(
        id=tid, owner=tid, state="waiting", created_at=1.0, expires_at=None, pool="p",
        tags=(), sandbox=None, priority=0, ttl=None,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def two_stores(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Store, Store]]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'corral.db'}"
    else:
        url = str(request.getfixturevalue("pg_url"))
    first = await open_store(url)
    second = await open_store(url)
    try:
        yield first, second
    finally:
        await second.close()
        await first.close()


async def test_two_joins_decided_on_the_same_load_land_once(
    two_stores: tuple[Store, Store],
) -> None:
    a, b = two_stores
    vm = await a.pools.create_vm("p", state="spawning", now=1.0)
    assert await a.pools.update_vm(vm.name, expect=["spawning"], changes={"state": "ready"})
    for tid in ("t0", "t1", "t2"):
        await a.pools.insert_ticket(_ticket(tid))
    assert await a.pools.assign_many("t0", [(vm.name, 0)], now=2.0, slots=2)
    # both hosts read the VM now: one ticket on it, room for one more
    seen_a, seen_b = await a.pools.get_vm(vm.name), await b.pools.get_vm(vm.name)
    assert seen_a is not None and seen_b is not None and seen_a.load == seen_b.load == 1
    # host A's join lands; host B's, decided on the same load, must not
    assert await a.pools.assign_many("t1", [(vm.name, seen_a.load)], now=3.0, slots=2)
    assert not await b.pools.assign_many("t2", [(vm.name, seen_b.load)], now=3.0, slots=2)
    after = await b.pools.get_vm(vm.name)
    assert after is not None and after.load == 2 and after.tickets == ("t0", "t1")
    t2 = await a.pools.get_ticket("t2")
    assert t2 is not None and t2.state == "waiting" and t2.vm is None
