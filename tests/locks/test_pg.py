"""Cross-process cases of the PostgreSQL lock manager (the shared behaviour suite runs on it
through the ``driver`` fixture): FIFO across processes, a dead holder freed at its lease
expiry, wake-ups by NOTIFY, reconnection, a lapsed lease."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from corral import exceptions
from corral.locks.pg import _ACQUIRE_COVERED

from .conftest import eventually, open_pg_locks, queued

WORKER = Path(__file__).with_name("pg_worker.py")


class Worker:
    """A lock-holding process (``pg_worker.py``) and the lines it printed."""

    def __init__(self, url: str, host: str, key: str, lease: float, hold: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), url, host, key, str(lease), hold],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []

    async def expect(self, prefix: str, timeout: float = 30.0) -> str:
        """Wait for the next line starting with ``prefix`` (fail after ``timeout``)."""
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), timeout)
            if not line:
                raise AssertionError(f"worker ended before printing {prefix!r}: {self.lines}")
            self.lines.append(line.strip())
            if line.startswith(prefix):
                return line.strip()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture
async def locks(pg_locks_url: str) -> AsyncIterator[Any]:
    manager = await open_pg_locks(pg_locks_url, host_id="main", lease=60.0)
    yield manager
    await manager.close()


async def test_fifo_across_processes(pg_locks_url: str, locks: Any, workers: list[Worker]) -> None:
    """Breakage caught: a grant that ignores arrival order (e.g. by owner or by host)."""
    held = await locks.acquire("vm/a", owner="main")
    for i, name in enumerate(["w-c", "w-a", "w-b"]):
        worker = Worker(pg_locks_url, name, "vm/a", 30.0, "0")
        workers.append(worker)
        await worker.expect("queued")
        await eventually(lambda n=i + 1: queued(locks, "vm/a") == n, 30)
    held.release()
    tokens = [int((await w.expect("granted")).split()[1]) for w in workers]
    assert tokens == [2, 3, 4], "granted in arrival order, each with the next token"
    for w in workers:
        await w.expect("released")


async def test_dead_holder_is_freed_at_lease_expiry(
    pg_locks_url: str, locks: Any, workers: list[Worker]
) -> None:
    """Breakage caught: locks of a dead host kept forever (Ironic's stuck reservations)."""
    holder = Worker(pg_locks_url, "doomed", "vm/a", 1.0, "forever")
    workers.append(holder)
    token = int((await holder.expect("granted")).split()[1])
    waiting = asyncio.ensure_future(locks.acquire("vm/a", owner="main", timeout=60.0))
    await eventually(lambda: queued(locks, "vm/a") == 1, 30)
    blocker = await locks.acquire("vm/b", owner="blocker")
    queuer = Worker(pg_locks_url, "doomed-2", "vm/b", 1.0, "forever")
    workers.append(queuer)
    await queuer.expect("queued")
    assert not waiting.done()
    holder.kill()
    queuer.kill()
    held = await asyncio.wait_for(waiting, 60)
    assert held.token("vm/a") > token
    await eventually(lambda: queued(locks, "vm/b") == 0, 30)
    held.release()
    blocker.release()
    assert locks.status() == []


async def test_waiter_is_woken_by_notify_not_by_the_heartbeat(pg_locks_url: str) -> None:
    """Breakage caught: waiters that only learn of a grant when they poll (here the heartbeat,
    every 40 s with a 120 s lease, would be the only other way in)."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=120.0, heartbeat=40.0)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=120.0, heartbeat=40.0)
    try:
        held = await a.acquire("vm/a", owner="a1")
        waiting = asyncio.ensure_future(b.acquire("vm/a", owner="b1"))
        await eventually(lambda: queued(a, "vm/a") == 1, 30)
        held.release()
        got = await asyncio.wait_for(waiting, 20.0)
        assert got.token("vm/a") == 2
        got.release()
    finally:
        await a.close()
        await b.close()


async def _terminate(url: str, pids: list[int | None]) -> None:
    def run() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for pid in pids:
                if pid is not None:
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    await asyncio.to_thread(run)


async def test_reconnect_after_terminate_backend(pg_locks_url: str) -> None:
    """Breakage caught: a grant whose NOTIFY was sent while the listener was disconnected is
    lost (no re-read after reconnect), or a dead connection is never replaced."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=60.0, heartbeat=20.0)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=60.0, heartbeat=20.0)
    gate = threading.Event()
    connect = b._listener._connect

    def gated_connect() -> Any:
        gate.wait(60)  # the listener stays away until the grant's NOTIFY is gone
        return connect()

    b._listener._connect = gated_connect
    try:
        held = await a.acquire("vm/a", owner="a1")
        # no timeout: a timed-out cancel would also report the grant and hide a lost NOTIFY
        waiting = asyncio.ensure_future(b.acquire("vm/a", owner="b1"))
        await eventually(lambda: queued(a, "vm/a") == 1, 30)
        await _terminate(pg_locks_url, [b._listener.backend_pid(), b._batcher.backend_pid()])
        await eventually(lambda: not b._listener.listening.is_set(), 30)
        held.release()  # its NOTIFY goes to a connection that is gone
        await eventually(lambda: [h.owner for s in a.status() for h in s.holders] == ["b1"], 30)
        gate.set()
        got = await asyncio.wait_for(waiting, 30)
        got.release()
        await eventually(lambda: b._listener.reconnects >= 1, 30)
        again = await b.acquire("vm/a", owner="b1", timeout=30.0)
        assert again.token("vm/a") == 3
        again.release()
        await eventually(lambda: a.status() == [], 30)
    finally:
        gate.set()
        await a.close()
        await b.close()


async def test_lapsed_lease_frees_locks_and_the_holder_learns_it(pg_locks_url: str) -> None:
    """Breakage caught: a paused host that keeps believing it holds a lock after its lease
    lapsed and the lock was granted to another (the holder must see LockReleased)."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=1.5)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=1.5)
    try:
        held = await a.acquire("vm/a", owner="a1")
        old = held.token("vm/a")
        session = a.session

        def lapse() -> None:
            with psycopg.connect(pg_locks_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE cluster_hosts SET lease_expires_at = 0 WHERE session = %s", (session,)
                )

        await asyncio.to_thread(lapse)
        got = await b.acquire("vm/a", owner="b1", timeout=30.0)
        assert got.token("vm/a") > old
        await eventually(lambda: held.released, 30)
        with pytest.raises(exceptions.LockReleased):
            held.token("vm/a")
        assert a.session != session and a.incarnation == 2, "rejoined as a new incarnation"
        got.release()
        (await a.acquire("vm/a", owner="a1", timeout=30.0)).release()
    finally:
        await a.close()
        await b.close()


async def test_restarted_host_supersedes_its_previous_incarnation(pg_locks_url: str) -> None:
    """Breakage caught: a host restarted under the same id keeps its dead incarnation's locks
    until the old lease lapses (they must be freed at once: the old process is gone)."""
    from corral.cluster import hosts

    old = await open_pg_locks(pg_locks_url, host_id="h", lease=60.0, heartbeat=20.0)
    held = await old.acquire("vm/a", owner="task-1")
    new = await open_pg_locks(pg_locks_url, host_id="h", lease=60.0, heartbeat=20.0)
    try:
        assert new.incarnation == old.incarnation + 1
        got = await new.acquire("vm/a", owner="task-2", timeout=10.0)
        assert got.token("vm/a") > held.token("vm/a")

        def listed() -> list[hosts.HostRecord]:
            with psycopg.connect(pg_locks_url) as conn:
                return hosts.list_hosts(conn)

        (record,) = await asyncio.to_thread(listed)
        assert (record.host_id, record.session, record.alive) == ("h", new.session, True)
        got.release()
    finally:
        await new.close()
        await old.close()


class _Member:
    """A membership kept outside the lock manager (as ``corral serve``'s is)."""

    def __init__(self, url: str, host_id: str, lease: float) -> None:
        self.url, self.host_id, self.lease = url, host_id, lease
        self.session, self.incarnation = "", 0

    def join(self) -> None:
        from corral.cluster import hosts

        with psycopg.connect(self.url, autocommit=True) as conn:
            session = hosts.new_session()
            self.incarnation = hosts.register(conn, self.host_id, session, self.lease)
            self.session = session


async def test_attached_manager_uses_the_membership_session_and_follows_its_rejoin(
    pg_locks_url: str,
) -> None:
    """A manager attached to a membership registers no host of its own and binds its requests
    to the membership's session; when the membership rejoins (a lapsed lease), the locks of
    the old session are released locally and new requests use the new session. Breakages
    caught: an attached manager registering its own row (a phantom host others would count);
    a rejoin left unnoticed (the holder keeps believing it holds a lock that a later grant,
    with a larger token, took)."""
    member = _Member(pg_locks_url, "m", lease=30.0)
    await asyncio.to_thread(member.join)
    a = await open_pg_locks(pg_locks_url, member=member, heartbeat=0.2)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=30.0)
    try:
        assert a.session == member.session and a.host_id == "m"

        def rows() -> list[tuple[str, str]]:
            with psycopg.connect(pg_locks_url) as conn:
                return conn.execute("SELECT host_id, session FROM cluster_hosts").fetchall()

        assert sorted(await asyncio.to_thread(rows)) == sorted(
            [("m", member.session), ("b", b.session)]
        )
        held = await a.acquire("vm/a", owner="t1")
        old_token = held.token("vm/a")
        await asyncio.to_thread(member.join)  # rejoined: the old session is superseded
        got = await b.acquire("vm/a", owner="t2", timeout=30.0)
        assert got.token("vm/a") > old_token
        await eventually(lambda: held.released, 30)
        with pytest.raises(exceptions.LockReleased):
            held.token("vm/a")
        assert a.session == member.session and a.incarnation == 2
        latest = got.token("vm/a")
        got.release()
        again = await a.acquire("vm/a", owner="t1", timeout=30.0)
        assert again.token("vm/a") > latest
        again.release()
    finally:
        await a.close()
        await b.close()
    assert sorted(h for h, _ in await asyncio.to_thread(rows)) == ["b", "m"]


def _sync_commit_after(url: str, session: str, calls: list[tuple[str, tuple[Any, ...]]]) -> str:
    """``synchronous_commit`` at the end of one transaction running ``calls`` (rolled back)."""
    with psycopg.connect(url) as conn:
        for sql, params in calls:
            conn.execute(sql, params)
        row = conn.execute("SHOW synchronous_commit").fetchone()
        conn.rollback()
    assert row is not None
    return str(row[0])


_PLAIN = "SELECT corral_lock_acquire(%s, %s, %s, %s, 'x')"
_RELEASE = "SELECT corral_lock_release(%s, NULL)"


async def test_covered_grant_commits_lazily_a_handover_durably(
    pg_locks_url: str, locks: Any
) -> None:
    """A grant asked with ``durable=False`` (the task engine's, covered by the task's own next
    commit) does not make its transaction wait for the WAL flush; a grant made to a waiter in the
    same transaction (a release handing a key over) still does, in either order.
    Breakage caught: the covered function leaving ``synchronous_commit`` on (no fsync saved), or
    turning it off over an earlier or later durable grant (a hand-over lost in a crash)."""
    s = locks.session
    held = await locks.acquire("vm/d", owner="holder")
    waiter = asyncio.ensure_future(locks.acquire("vm/d", owner="waiter").__aenter__())
    await eventually(lambda: queued(locks, "vm/d") == 1)
    rid = held._request.rid
    plain = [(_PLAIN, (s, "t.1", "o", "vm/new"))]
    covered = [(_ACQUIRE_COVERED, (s, "t.1", "o", "vm/new", "x"))]
    assert await asyncio.to_thread(_sync_commit_after, pg_locks_url, s, plain) == "on"
    assert await asyncio.to_thread(_sync_commit_after, pg_locks_url, s, covered) == "off"
    before = [(_RELEASE, (rid,)), *covered]
    after = [*covered, (_RELEASE, (rid,))]
    assert await asyncio.to_thread(_sync_commit_after, pg_locks_url, s, before) == "on"
    assert await asyncio.to_thread(_sync_commit_after, pg_locks_url, s, after) == "on"
    held.release()
    got = await asyncio.wait_for(waiter, 30)
    assert got.token("vm/d") == 2
    got.release()


async def test_covered_acquire_grants_like_any(locks: Any) -> None:
    """``durable=False`` changes only the commit: same grants, tokens, queueing and checks.
    Breakage caught: the covered path skipping the queue or the token."""
    first = await locks.acquire("vm/a", owner="a", durable=False)
    assert first.token("vm/a") == 1
    second = asyncio.ensure_future(locks.acquire("vm/a", owner="b", durable=False).__aenter__())
    await eventually(lambda: queued(locks, "vm/a") == 1)
    first.release()
    got = await asyncio.wait_for(second, 30)
    assert got.token("vm/a") == 2
    got.release()
    with pytest.raises(exceptions.InvalidInput, match="durable must be True or False"):
        locks.acquire("vm/a", owner="c", durable="no")
    assert queued(locks, "vm/a") == 0


def _writes_of(url: str, calls: list[tuple[str, tuple[Any, ...]]]) -> dict[str, tuple[Any, ...]]:
    """Per lock table: (answers, rows inserted, updated, deleted) by ``calls`` run in one
    transaction (rolled back), read from ``pg_stat_xact_user_tables``."""
    with psycopg.connect(url) as conn:
        answers = tuple(conn.execute(sql, params).fetchone()[0] for sql, params in calls)  # type: ignore[index]
        rows = conn.execute(
            "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del FROM pg_stat_xact_user_tables"
            " WHERE relname LIKE 'lock\\_%%'"
        ).fetchall()
        conn.rollback()
    out: dict[str, tuple[Any, ...]] = {str(name): (ins, upd, dele) for name, ins, upd, dele in rows}
    out["answers"] = answers
    return out


async def test_one_key_grant_on_arrival_writes_no_request_row(
    pg_locks_url: str, locks: Any
) -> None:
    """The task engine's hot path (a one-key lock nobody holds or waits for, then its release)
    writes only the key's counters and its grant: no ``lock_requests`` row, for a key seen
    before and for a new one (whose resource row is made on the fast path too).
    Breakage caught: the request row written and deleted again (migration 0007's fast path:
    four indexes more per acquire and per release), or a new key sent down the general path."""
    s = locks.session
    known = await locks.acquire("vm/known", owner="warm")
    known.release()
    await eventually(lambda: locks.status() == [], 30)
    for key, resource_writes in [("vm/known", (0, 1, 0)), ("vm/brand-new", (1, 0, 0))]:
        writes = await asyncio.to_thread(
            _writes_of,
            pg_locks_url,
            [(_PLAIN, (s, f"{s}.900", "t1", key)), (_RELEASE, (f"{s}.900",))],
        )
        assert writes["answers"][1] == "ok", writes
        assert writes["answers"][0] == ("g 2x" if key == "vm/known" else "g 1x"), writes
        assert writes.get("lock_requests", (0, 0, 0)) == (0, 0, 0), (key, writes)
        assert writes["lock_grants"] == (1, 0, 1), (key, writes)
        assert writes["lock_resources"] == resource_writes, (key, writes)


async def test_grants_without_request_rows_keep_every_semantic(
    pg_locks_url: str, locks: Any
) -> None:
    """A one-key grant made on arrival has no request row, yet a retried acquire, a cancel, an
    upgrade, a downgrade, a second upgrader, ``release_all`` and the status see it as before.
    Breakage caught: a function that looks the request up by its row only (a retried call
    answered ``E held``, a cancel answering ``gone`` so the raced grant leaks, an upgrade
    refused as released)."""
    s = locks.session

    def direct() -> tuple[str, ...]:
        with psycopg.connect(pg_locks_url, autocommit=True) as conn:
            got = conn.execute(_PLAIN, (s, f"{s}.901", "r1", "vm/r")).fetchone()
            again = conn.execute(_PLAIN, (s, f"{s}.901", "r1", "vm/r")).fetchone()
            cancel = conn.execute("SELECT corral_lock_cancel(%s)", (f"{s}.901",)).fetchone()
            other = conn.execute(
                "SELECT corral_lock_release(%s, 'vm/zz')", (f"{s}.901",)
            ).fetchone()
            done = conn.execute(_RELEASE, (f"{s}.901",)).fetchone()
            gone = conn.execute(_RELEASE, (f"{s}.901",)).fetchone()
        assert got and again and cancel and other and done and gone
        return got[0], again[0], cancel[0], other[0].split()[1], done[0], gone[0]

    assert await asyncio.to_thread(direct) == ("g 1x", "g 1x", "g 1x", "notheld", "ok", "gone")
    a = await locks.acquire("vm/u", mode="shared", owner="a")
    b = await locks.acquire("vm/u", mode="shared", owner="b")
    upgrading = asyncio.ensure_future(a.upgrade(timeout=30.0))
    await eventually(lambda: any(w.upgrade for r in locks.status() for w in r.queue), 30)
    with pytest.raises(exceptions.UpgradeConflict):
        await b.upgrade(timeout=1.0)
    b.release()
    await asyncio.wait_for(upgrading, 30)
    assert a.mode("vm/u").value == "exclusive" and a.token("vm/u") == 3
    a.downgrade()
    c = await locks.acquire("vm/u", mode="shared", owner="c", timeout=30.0)
    assert [h.owner for r in locks.status() for h in r.holders] == ["a", "c"]
    d = await locks.acquire("vm/d", owner="a")
    locks.release_all("a")
    assert d.released and a.released
    assert [(r.key, [h.owner for h in r.holders]) for r in locks.status()] == [("vm/u", ["c"])]
    c.release()
    await eventually(lambda: locks.status() == [], 30)


async def test_grant_without_request_row_survives_a_reconnect(pg_locks_url: str) -> None:
    """After the listener reconnects, the manager re-reads its session's state: a held one-key
    grant (no request row) is found and stays held.
    Breakage caught: the re-read listing request rows only, so the manager believes its held
    lock withdrawn (``held.released``) while the grant stays in the table for ever."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=60.0, heartbeat=20.0)
    try:
        held = await a.acquire("vm/h", owner="h1")
        reread: list[Any] = []
        on_mine = a._on_mine

        def spy(known: Any, rows: Any, error: BaseException | None) -> None:
            reread.append(rows)
            on_mine(known, rows, error)

        a._on_mine = spy
        await _terminate(pg_locks_url, [a._listener.backend_pid()])
        await eventually(lambda: bool(reread), 30)
        assert [row[:2] for row in reread[0]] == [(held._request.rid, "granted")]
        assert not held.released
        assert held.token("vm/h") == 1
        held.release()
        await eventually(lambda: a.status() == [], 30)
    finally:
        await a.close()


async def test_release_all_on_another_host_reaches_a_grant_without_request_row(
    pg_locks_url: str,
) -> None:
    """``release_all`` called on host B frees a one-key grant made on arrival on host A (no
    request row) and tells A, whose lock is then released, and a waiter on B gets the key.
    Breakage caught: the notification sent to a session read from a request row that does not
    exist (A would believe it holds the lock for ever)."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=60.0)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=60.0)
    try:
        held = await a.acquire("vm/x", owner="task-9")
        waiting = asyncio.ensure_future(b.acquire("vm/x", owner="other", timeout=30.0))
        await eventually(lambda: queued(b, "vm/x") == 1, 30)
        await asyncio.to_thread(b.release_all, "task-9")
        await eventually(lambda: held.released, 30)
        got = await asyncio.wait_for(waiting, 30)
        assert got.token("vm/x") == 2
        got.release()
        await eventually(lambda: b.status() == [], 30)
    finally:
        await a.close()
        await b.close()


async def test_grants_are_heard_on_the_batchers_connection_after_it_reconnects(
    pg_locks_url: str,
) -> None:
    """Grants are notified on the SQL batcher's own connection (read on the loop): with the
    listener thread kept away, a waiter is still granted after that connection was killed and
    came back. Breakage caught: LISTEN not issued again on the new connection (the grant's
    NOTIFY goes nowhere; the re-read after the reconnect ran before the release)."""
    a = await open_pg_locks(pg_locks_url, host_id="a", lease=60.0, heartbeat=20.0)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=60.0, heartbeat=20.0)
    gate = threading.Event()
    connect = b._listener._connect

    def gated_connect() -> Any:
        gate.wait(60)
        return connect()

    b._listener._connect = gated_connect
    try:
        await _terminate(pg_locks_url, [b._listener.backend_pid()])
        await eventually(lambda: not b._listener.listening.is_set(), 30)
        held = await a.acquire("vm/a", owner="a1")
        waiting = asyncio.ensure_future(b.acquire("vm/a", owner="b1"))
        await eventually(lambda: queued(a, "vm/a") == 1, 30)
        old = b._batcher.backend_pid()
        await _terminate(pg_locks_url, [old])
        await eventually(lambda: b._batcher.backend_pid() not in (None, old), 30)
        # the re-read after the reconnect is answered before the release
        await eventually(lambda: b._batcher._sent is None and not b._batcher._queue, 30)
        assert not waiting.done()
        held.release()
        got = await asyncio.wait_for(waiting, 30)
        assert got.token("vm/a") == 2
        got.release()
    finally:
        gate.set()
        await a.close()
        await b.close()


async def test_a_grant_notified_while_the_batcher_was_down_is_read_again(
    pg_locks_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant whose NOTIFY was sent while the batcher's connection was down is found by the
    re-read after it reconnects. Breakage caught: no re-read on the batcher's reconnect (the
    waiter waits forever)."""
    from corral.cluster import loopsql

    a = await open_pg_locks(pg_locks_url, host_id="a", lease=60.0, heartbeat=20.0)
    b = await open_pg_locks(pg_locks_url, host_id="b", lease=60.0, heartbeat=20.0)
    gate = asyncio.Event()
    original = loopsql.psycopg.AsyncConnection.connect

    async def gated(*args: Any, **kw: Any) -> Any:
        await gate.wait()
        return await original(*args, **kw)

    monkeypatch.setattr(loopsql.psycopg.AsyncConnection, "connect", gated)
    try:
        held = await a.acquire("vm/a", owner="a1")
        waiting = asyncio.ensure_future(b.acquire("vm/a", owner="b1"))
        await eventually(lambda: queued(a, "vm/a") == 1, 30)
        await _terminate(pg_locks_url, [b._batcher.backend_pid()])
        await eventually(lambda: b._batcher.backend_pid() is None, 30)
        held.release()  # its NOTIFY goes to a connection that is gone
        await eventually(lambda: [h.owner for s in a.status() for h in s.holders] == ["b1"], 30)
        gate.set()
        got = await asyncio.wait_for(waiting, 30)
        assert got.token("vm/a") == 2
        got.release()
    finally:
        gate.set()
        await a.close()
        await b.close()
