"""The SQLite store's reader: reads never queue behind the writer, see every committed write, and
each read unit is one snapshot; the hot statements run on the driver cursor."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from sqlalchemy import Connection

from corral.store import open_store
from corral.store.pools import TicketRow
from corral.store.sql import SqlExecutor


def _ticket(ticket_id: str) -> TicketRow:
    return TicketRow(
        id=ticket_id,
        owner="o",
        state="waiting",
        created_at=1.0,
        expires_at=None,
        pool="p",
        tags=("b", "a"),
        sandbox=None,
        priority=0,
        ttl=None,
    )


async def test_reads_do_not_wait_for_a_blocked_writer(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}")
    executor: SqlExecutor = store.pools._executor  # type: ignore[attr-defined]
    try:
        first = await store.pools.insert_ticket(_ticket("t1"))
        assert first.seq >= 1 and first.tags == ("b", "a")
        inside, release = threading.Event(), threading.Event()

        def blocked_write(conn: Connection) -> None:
            inside.set()
            assert release.wait(10)

        writer = asyncio.ensure_future(executor.run(blocked_write))
        assert await asyncio.to_thread(inside.wait, 10)
        # the writer's thread is busy: the read still answers, with what was committed
        row = await asyncio.wait_for(store.pools.get_ticket("t1"), 5)
        assert row == first
        assert not writer.done()
        release.set()
        await writer
    finally:
        await store.close()


async def test_a_read_sees_what_was_committed_before_it(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        for i in range(20):
            row = await store.pools.insert_ticket(_ticket(f"t{i}"))
            assert await store.pools.get_ticket(row.id) == row
            assert [t.id for t in await store.pools.list_tickets()][-1] == row.id
        assert await store.pools.get_ticket("missing") is None
    finally:
        await store.close()


async def test_a_read_unit_is_one_snapshot(tmp_path: Path) -> None:
    store = await open_store(f"sqlite:///{tmp_path / 'c.db'}")
    executor: SqlExecutor = store.pools._executor  # type: ignore[attr-defined]
    try:
        await store.pools.insert_ticket(_ticket("t0"))
        between, written = threading.Event(), threading.Event()

        def count_twice(conn: Connection) -> tuple[int, int]:
            before = conn.exec_driver_sql("SELECT count(*) FROM tickets").scalar_one()
            between.set()
            assert written.wait(10)
            after = conn.exec_driver_sql("SELECT count(*) FROM tickets").scalar_one()
            return int(before), int(after)

        reading = asyncio.ensure_future(executor.read(count_twice))
        assert await asyncio.to_thread(between.wait, 10)
        await store.pools.insert_ticket(_ticket("t1"))  # committed while the read is open
        written.set()
        assert await reading == (1, 1)
        assert len(await store.pools.list_tickets()) == 2
    finally:
        await store.close()
