"""The cluster-wide event log on PostgreSQL (issue 12): one id sequence for every host.

Breakages caught (each fails a test here):
- no ordering guard in :func:`corral.cluster.eventlog.append_in` (drop the advisory lock): the
  second appender commits id 2 while id 1 is uncommitted, the tailing reader moves past 2 and
  never sees 1 (``test_a_reader_never_skips_an_id_of_two_concurrent_appenders``);
- one insert per event instead of per batch (``inserts`` equals the events appended);
- a reader that resumes from the start, or from its last *read attempt*, after a lost
  connection (repeated or missing ids in ``test_a_killed_connection_*``);
- a retried batch appended again although its first attempt committed (duplicate payloads);
- pruning that deletes the newest row or ignores ``keep``/``history``;
- a hub that numbers cluster events itself (ids differ between hosts), or resumes a client
  from its memory only (a ``Last-Event-ID`` from another host gets ``resync``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from corral.api import stream
from corral.api.auth import OPEN, Principal, Role
from corral.cluster import eventlog
from corral.controller.events import Event, EventBus
from corral.pools.model import PoolStatus

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]


async def until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.01)


def table_ids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [int(r[0]) for r in conn.execute("SELECT id FROM cluster_events ORDER BY id")]


def waiting_on_a_lock(url: str, pid: int) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


async def test_a_reader_never_skips_an_id_of_two_concurrent_appenders(
    pg_cluster_url: str,
) -> None:
    """Appender 1 takes its ids and has not committed; appender 2 appends meanwhile; a reader
    tails between each step. With the guard, appender 2 waits for appender 1's commit, so the
    reader sees every id; without it, the reader reads id 2, moves past id 1, and skips it."""
    one = await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True)
    two = await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True)
    reader = await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True)
    seen: list[int] = []

    async def tail() -> None:
        after = seen[-1] if seen else 0
        seen.extend(r.id for r in await eventlog.read_rows(reader, after, 100))

    try:
        async with one.transaction():
            first = await eventlog.append_in(one, [("vm", None, "{}")] * 2, "one/1", 1.0)
            second = asyncio.create_task(
                eventlog.append_batch(two, [("vm", None, "{}")] * 3, "two/1", 2.0)
            )
            pid = two.info.backend_pid
            await until(
                lambda: second.done() or waiting_on_a_lock(pg_cluster_url, pid),
                "appender 2 committed or waits",
            )
            await tail()  # appender 1 has not committed: nothing (or, unguarded, id 3..5)
        await tail()
        await second
        await tail()
    finally:
        for conn in (one, two, reader):
            await conn.close()
    assert first == [1, 2]
    assert seen == table_ids(pg_cluster_url) == [1, 2, 3, 4, 5]


async def test_many_concurrent_appenders_every_reader_sees_every_id_in_order(
    pg_cluster_url: str,
) -> None:
    """Four connections append small batches as fast as they can while a reader tails."""
    seen: list[int] = []
    stop = asyncio.Event()

    async def appender(n: int) -> None:
        async with await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True) as c:
            for i in range(40):
                await eventlog.append_batch(c, [("vm", None, "{}")] * (1 + i % 3), f"{n}/{i}", 0)

    async def reader() -> None:
        async with await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True) as c:
            while True:
                rows = await eventlog.read_rows(c, seen[-1] if seen else 0, 1000)
                seen.extend(r.id for r in rows)
                if stop.is_set() and not rows:
                    return

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(appender(n) for n in range(4)))
    stop.set()
    await reading
    assert seen == table_ids(pg_cluster_url)
    assert len(seen) == 4 * sum(1 + i % 3 for i in range(40))


class Tail:
    """What one log handed over."""

    def __init__(self) -> None:
        self.rows: list[eventlog.Row] = []

    def __call__(self, rows: list[eventlog.Row]) -> None:
        self.rows.extend(rows)

    @property
    def ids(self) -> list[int]:
        return [r.id for r in self.rows]


async def test_two_hosts_logs_hand_over_the_same_rows_in_one_order(pg_cluster_url: str) -> None:
    a_rows, b_rows = Tail(), Tail()
    a = eventlog.EventLog(pg_cluster_url, a_rows, origin="a")
    b = eventlog.EventLog(pg_cluster_url, b_rows, origin="b")
    await a.start()
    await b.start()
    try:
        for i in range(200):
            (a if i % 2 else b).append("ticket", "alice", json.dumps({"n": i}))
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        await until(lambda: len(a_rows.ids) == 200 and len(b_rows.ids) == 200, "200 rows each")
        assert a_rows.rows == b_rows.rows
        assert a_rows.ids == sorted(set(a_rows.ids)) == table_ids(pg_cluster_url)
        assert a.appended == b.appended == 100
        # one insert per write tick, not one per event
        assert a.inserts + b.inserts < 200 / 2, (a.inserts, b.inserts)
        assert {r.owner for r in a_rows.rows} == {"alice"}
    finally:
        await a.close()
        await b.close()


async def test_a_killed_connection_loses_and_repeats_nothing(
    pg_cluster_url: str, pg_admin_url: str
) -> None:
    """Every connection of both logs is killed several times while they append: each reader
    hands over every row once, in order, and no batch is in the table twice."""
    a_rows, b_rows = Tail(), Tail()
    a = eventlog.EventLog(pg_cluster_url, a_rows, origin="a", poll=0.5)
    b = eventlog.EventLog(pg_cluster_url, b_rows, origin="b", poll=0.5)
    await a.start()
    await b.start()
    try:
        n = 0
        for _ in range(4):
            for _ in range(50):
                (a, b)[n % 2].append("vm", None, json.dumps({"n": n}))
                n += 1
                await asyncio.sleep(0.002)
            with psycopg.connect(pg_admin_url, autocommit=True) as admin:
                for pid in a.backend_pids() + b.backend_pids():
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await until(lambda: len(a_rows.ids) >= n and len(b_rows.ids) >= n, f"{n} rows each")
        await asyncio.sleep(1.0)  # a late duplicate would show now
        for tail in (a_rows, b_rows):
            assert tail.ids == table_ids(pg_cluster_url)
            assert sorted(json.loads(r.payload)["n"] for r in tail.rows) == list(range(n))
        assert a.reconnects + b.reconnects > 6
    finally:
        await a.close()
        await b.close()


async def test_pruning_keeps_the_newest_rows_and_never_the_last(pg_cluster_url: str) -> None:
    log_ = eventlog.EventLog(pg_cluster_url, Tail(), origin="a", keep=5, history=100.0)
    async with await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True) as c:
        await eventlog.append_batch(c, [("vm", None, "{}")] * 12, "x/1", 1000.0)
        await eventlog.append_batch(c, [("vm", None, "{}")] * 3, "x/2", 2000.0)
    assert await log_.prune(1050.0, batch=4) == 10  # none too old; beyond keep=5: 1..10
    assert table_ids(pg_cluster_url) == list(range(11, 16))
    assert await log_.prune(2050.0) == 2  # older than history: 11, 12
    assert await log_.prune(5000.0) == 2  # everything is old: all but the newest row
    assert table_ids(pg_cluster_url) == [15]
    with pytest.raises(Exception, match="batch"):
        await log_.prune(5000.0, batch=0)


# --- two hubs (two hosts) on one log -------------------------------------------------------------

ALICE = Principal(owner="alice", role=Role.USER)


class FakeController:
    async def get_ticket(self, ticket_id: str) -> Any:
        raise AssertionError("owners come with the events here")

    async def list_pools(self) -> list[PoolStatus]:
        return [PoolStatus("p", "fake", (), 4, 2, 1, vms={"ready": 1})]

    def leads(self, pool: str) -> bool:
        return False


def frames(listener: stream.Listener) -> list[tuple[int, str, dict[str, Any]]]:
    out = []
    for chunk in list(listener._frames):
        for block in chunk.decode().strip().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.split("\n"))
            out.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return out


def hub(url: str, origin: str) -> stream.EventHub:
    shared = stream.Shared(url, origin, None)
    return stream.EventHub(FakeController(), EventBus(), shared=shared)  # type: ignore[arg-type]


async def test_two_hubs_stream_the_same_events_and_resume_each_others_ids(
    pg_cluster_url: str,
) -> None:
    a, b = hub(pg_cluster_url, "a"), hub(pg_cluster_url, "b")
    on_a, on_b, alice_b = a.listen(OPEN), b.listen(OPEN), b.listen(ALICE)
    try:
        await until(lambda: a._log_ready.is_set() and b._log_ready.is_set(), "logs started")
        await a.handle(Event("ticket", "t1", "waiting", 1.0, {"owner": "alice", "pool": "p"}))
        await b.handle(Event("ticket", "t2", "waiting", 1.0, {"owner": "bob", "pool": "p"}))
        await a.handle(Event("vm", "vm-1", "ready", 2.0, {}))
        await until(lambda: len(frames(on_a)) == 3 and len(frames(on_b)) == 3, "3 events each")
        got_a, got_b = frames(on_a), frames(on_b)
        assert got_a == got_b
        ids = [i for i, _, _ in got_a]
        assert ids == sorted(set(ids))
        await until(lambda: len(frames(alice_b)) == 1, "alice's own ticket on b")
        assert [(k, d["id"]) for _, k, d in frames(alice_b)] == [("ticket", "t1")]
        # a client of host a reconnects to host b after the first event: exactly the rest
        resumed = b.listen(OPEN, last_id=ids[0])
        await until(lambda: len(frames(resumed)) == 2, "the missed events from b")
        assert frames(resumed) == got_a[1:]
        # ... and one older than b's memory is served from the table
        b._forgotten = ids[-1]
        from_table = b.listen(OPEN, last_id=ids[0])
        await until(lambda: len(frames(from_table)) == 2, "the missed events from the table")
        assert frames(from_table) == got_a[1:]
        # an id the log never had: resync
        unknown = b.listen(OPEN, last_id=ids[-1] + 1000)
        await until(lambda: len(frames(unknown)) == 1, "resync")
        assert frames(unknown)[0][1] == "resync"
        # events that follow reach the resumed listeners once each, in order
        await a.handle(Event("vm", "vm-2", "ready", 3.0, {}))
        await until(lambda: len(frames(from_table)) == 3, "the next event")
        assert [i for i, _, _ in frames(from_table)] == [*ids[1:], ids[-1] + 1]
        assert [i for i, _, _ in frames(resumed)] == [*ids[1:], ids[-1] + 1]
    finally:
        await a.close()
        await b.close()


async def test_a_pruned_id_gets_resync_from_the_table(pg_cluster_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(pg_cluster_url, autocommit=True) as c:
        await eventlog.append_batch(c, [("vm", None, "{}")] * 10, "x/1", 1.0)
        await c.execute("DELETE FROM cluster_events WHERE id <= 5")
    b = hub(pg_cluster_url, "b")
    try:
        b.start()
        await until(b._log_ready.is_set, "log started")
        kept = b.listen(OPEN, last_id=5)  # 6.. are kept
        gone = b.listen(OPEN, last_id=3)  # 4, 5 are gone
        await until(lambda: len(frames(kept)) == 5 and len(frames(gone)) == 1, "answers")
        assert [i for i, _, _ in frames(kept)] == [6, 7, 8, 9, 10]
        assert [k for _, k, _ in frames(gone)] == ["resync"]
    finally:
        await b.close()


async def test_only_the_leader_publishes_the_periodic_pool_counts(pg_cluster_url: str) -> None:
    """Catches: every host publishing every pool's counts every period (N hosts, N copies)."""
    b = hub(pg_cluster_url, "b")  # its controller leads nothing
    try:
        b.start()
        await until(b._log_ready.is_set, "log started")
        await b.flush_pools(every=True)
        assert b.series("p")  # sampled for the chart all the same
        b._mark("p")  # a change made here: published
        await b.flush_pools()
        await asyncio.sleep(0.2)
        assert b.event_log is not None
        await until(lambda: b.event_log is not None and b.event_log.appended >= 1, "appended")
        assert b.event_log.appended == 1
    finally:
        await b.close()


async def test_a_host_hands_its_own_batches_over_without_reading_them_back(
    pg_cluster_url: str,
) -> None:
    """One host alone: every batch it appends directly follows what it handed over, so it is
    handed over as appended (same ids and rows as the table), with no read; a notification
    of its own batch, or of an id already handed over, makes no read either; one of a newer
    id does. Breakages caught: reading every own batch back, and a
    read per notification whatever its id (``reads`` grows; mutants
    ``event-log-reads-own-batch``, ``event-log-reads-seen-notes``)."""
    got: list[eventlog.Row] = []
    log = eventlog.EventLog(pg_cluster_url, got.extend, origin="solo", poll=60.0)
    await log.start()
    try:
        await asyncio.sleep(0.3)  # the read that follows LISTEN (what came before it) is done
        reads = log.reads
        for i in range(5):
            log.append("vm", None, json.dumps({"i": i}))
            await until(lambda i=i: len(got) == i + 1, f"batch {i} handed over")
            await asyncio.sleep(0.1)  # its own notification arrives meanwhile
        assert log.reads == reads
        assert [r.id for r in got] == table_ids(pg_cluster_url)
        assert [json.loads(r.payload)["i"] for r in got] == list(range(5))
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (eventlog.CHANNEL, f"{got[0].id} other/1"))
        await asyncio.sleep(0.3)
        assert log.reads == reads
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (eventlog.CHANNEL, f"{got[-1].id + 1} o/1"))
        await until(lambda: log.reads == reads + 1, "a read for a newer id")
    finally:
        await log.close()
