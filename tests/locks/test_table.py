"""The pure lock table: every SPEC §3 semantic, with time passed in and decisions as data."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.locks.keys import EXCLUSIVE, SHARED, Mode
from corral.locks.table import (
    CANCELLED,
    G_MODE,
    G_SINCE,
    G_TOKEN,
    GRANTED,
    RELEASED,
    WAITING,
    LockTable,
    Request,
)

S, X = SHARED, EXCLUSIVE


def req(owner: str, *keys: str, mode: Mode = X, timeout: float | None = None) -> Request:
    ordered = tuple(sorted(keys))
    return Request(owner, ordered, tuple(mode for _ in ordered), timeout)


@pytest.fixture
def table() -> LockTable:
    return LockTable()


def submit(table: LockTable, owner: str, *keys: str, mode: Mode = X, **kw: float) -> Request:
    r = req(owner, *keys, mode=mode, **kw)
    table.submit(r, 0.0)
    return r


def test_exclusive_excludes(table: LockTable) -> None:
    a = submit(table, "a", "vm/1")
    b = submit(table, "b", "vm/1")
    assert (a.state, b.state) == (GRANTED, WAITING)
    assert list(table.release(a, 1.0)) == [b]
    assert b.state is GRANTED


def test_shared_coexists_and_exclusive_waits_for_all(table: LockTable) -> None:
    readers = [submit(table, f"r{i}", "vm/1", mode=S) for i in range(3)]
    assert all(r.state is GRANTED for r in readers)
    writer = submit(table, "w", "vm/1")
    assert writer.state is WAITING
    assert not table.release(readers[0], 1.0)
    assert not table.release(readers[1], 1.0)
    assert list(table.release(readers[2], 1.0)) == [writer]


def test_waiting_exclusive_blocks_later_shared(table: LockTable) -> None:
    submit(table, "r1", "vm/1", mode=S)
    writer = submit(table, "w", "vm/1")
    late_reader = submit(table, "r2", "vm/1", mode=S)
    assert writer.state is WAITING
    assert late_reader.state is WAITING, "no writer starvation: FIFO even for compatible modes"


def test_cancelling_queued_exclusive_lets_shared_behind_it_in(table: LockTable) -> None:
    submit(table, "r1", "vm/1", mode=S)
    writer = submit(table, "w", "vm/1")
    behind = [submit(table, f"r{i}", "vm/1", mode=S) for i in (2, 3)]
    woken = table.cancel(writer, 1.0)
    assert writer.state is CANCELLED
    assert woken == behind
    assert all(r.state is GRANTED for r in behind)


def test_expired_exclusive_at_head_lets_shared_in_at_once(table: LockTable) -> None:
    submit(table, "r1", "vm/1", mode=S)
    writer = submit(table, "w", "vm/1", timeout=0.5)
    reader = submit(table, "r2", "vm/1", mode=S)
    assert table.expire(0.4) == ([], [])
    timed_out, woken = table.expire(0.5)
    assert timed_out == [writer] and writer.cancel_reason == "timed out"
    assert woken == [reader]


def test_shared_exclusive_shared_granted_in_arrival_order(table: LockTable) -> None:
    first = submit(table, "x0", "vm/1")
    s1 = submit(table, "s1", "vm/1", mode=S)
    x = submit(table, "x", "vm/1")
    s2 = submit(table, "s2", "vm/1", mode=S)
    s3 = submit(table, "s3", "vm/1", mode=S)
    assert list(table.release(first, 0.0)) == [s1]
    assert list(table.release(s1, 0.0)) == [x]
    assert list(table.release(x, 0.0)) == [s2, s3], "consecutive shared at the head go in together"


def test_request_cannot_be_granted_or_cancelled_twice(table: LockTable) -> None:
    a = submit(table, "a", "vm/1")
    with pytest.raises(exceptions.LockRequestProcessed):
        table.submit(a, 0.0)
    with pytest.raises(exceptions.LockRequestProcessed):
        table.cancel(a, 0.0)
    b = submit(table, "b", "vm/1")
    table.cancel(b, 0.0)
    with pytest.raises(exceptions.LockRequestProcessed):
        table.cancel(b, 0.0)
    with pytest.raises(exceptions.LockRequestProcessed):
        table.submit(b, 0.0)
    assert not table.release(a, 0.0), "the cancelled request must not be granted later"
    assert b.state is CANCELLED


def test_release_of_key_not_held_is_an_error(table: LockTable) -> None:
    a = submit(table, "a", "vm/1")
    with pytest.raises(exceptions.NotHeld):
        table.release_key("a", "vm/2", 0.0)
    with pytest.raises(exceptions.NotHeld):
        table.release_key("b", "vm/1", 0.0)
    table.release(a, 0.0)
    with pytest.raises(exceptions.NotHeld):
        table.release(a, 0.0)
    with pytest.raises(exceptions.NotHeld):
        table.release_key("a", "vm/1", 0.0)


def test_release_key_releases_one_key_of_a_multi_key_grant(table: LockTable) -> None:
    a = submit(table, "a", "vm/1", "vm/2")
    b = submit(table, "b", "vm/2")
    assert table.release_key("a", "vm/2", 0.0) == [b]
    assert a.state is GRANTED and list(a.grants) == ["vm/1"]
    table.release_key("a", "vm/1", 0.0)
    assert a.state is RELEASED


def test_owner_cannot_hold_a_resource_twice(table: LockTable) -> None:
    submit(table, "a", "vm/1", mode=S)
    with pytest.raises(exceptions.AlreadyHeld):
        submit(table, "a", "vm/1", mode=S)
    submit(table, "b", "vm/2")
    waiting = submit(table, "a", "vm/2", "vm/3")
    assert waiting.state is WAITING
    with pytest.raises(exceptions.AlreadyHeld, match="waits for"):
        submit(table, "a", "vm/3")
    assert [s.key for s in table.status()] == ["vm/1", "vm/2"], "a refused request changes nothing"


def test_multi_acquire_is_all_or_nothing_on_timeout(table: LockTable) -> None:
    blocker = submit(table, "b", "vm/2")
    multi = submit(table, "m", "vm/1", "vm/2", "vm/3", timeout=1.0)
    assert multi.state is WAITING and list(multi.grants) == ["vm/1"]
    other = submit(table, "o", "vm/1")
    assert other.state is WAITING
    timed_out, woken = table.expire(1.0)
    assert timed_out == [multi] and woken == [other]
    assert table.holds("b", "vm/2") and not table.holds("m", "vm/1")
    table.release(blocker, 1.0)
    assert [s.key for s in table.status()] == ["vm/1"]


def test_multi_acquire_takes_keys_in_sorted_order_one_by_one(table: LockTable) -> None:
    a = submit(table, "a", "vm/b")
    multi = submit(table, "m", "vm/c", "vm/a", "vm/b")
    assert multi.keys == ("vm/a", "vm/b", "vm/c")
    assert list(multi.grants) == ["vm/a"]
    late = submit(table, "l", "vm/c")
    assert late.state is GRANTED, "vm/c is not claimed before vm/b is granted"
    table.release(late, 0.0)
    assert list(table.release(a, 0.0)) == [multi]
    assert list(multi.grants) == ["vm/a", "vm/b", "vm/c"]


def test_upgrade_granted_when_sole_holder(table: LockTable) -> None:
    a = submit(table, "a", "vm/1", mode=S)
    token = a.grants["vm/1"][G_TOKEN]
    assert table.upgrade(a, 0.0) is True
    assert a.grants["vm/1"][G_MODE] is X
    assert a.grants["vm/1"][G_TOKEN] > token
    assert table.status()[0].mode is X


def test_upgrade_waits_for_other_holders_ahead_of_the_queue(table: LockTable) -> None:
    a = submit(table, "a", "vm/1", mode=S)
    b = submit(table, "b", "vm/1", mode=S)
    writer = submit(table, "w", "vm/1")
    assert table.upgrade(a, 0.0) is False
    late = submit(table, "late", "vm/1", mode=S)
    assert late.state is WAITING
    assert list(table.release(b, 1.0)) == [a]
    assert a.grants["vm/1"][G_MODE] is X and writer.state is WAITING
    assert table.downgrade(a, 2.0) == []  # the writer is at the head: still blocked
    assert list(table.release(a, 3.0)) == [writer]


def test_second_upgrader_fails_at_once(table: LockTable) -> None:
    a = submit(table, "a", "vm/1", mode=S)
    b = submit(table, "b", "vm/1", mode=S)
    assert table.upgrade(a, 0.0) is False
    with pytest.raises(exceptions.UpgradeConflict):
        table.upgrade(b, 0.0)
    assert b.upgrading == 0 and b.grants["vm/1"][G_MODE] is S
    assert list(table.release(b, 0.0)) == [a]


def test_cancel_upgrade_restores_shared_everywhere(table: LockTable) -> None:
    a = submit(table, "a", "vm/1", "vm/2", mode=S)
    b = submit(table, "b", "vm/2", mode=S)
    reader = submit(table, "r", "vm/1", mode=S)
    assert table.upgrade(a, 0.0) is False  # vm/1 shared with r, vm/2 with b
    table.release(reader, 0.0)
    assert a.grants["vm/1"][G_MODE] is X and a.upgrading == 1
    table.cancel_upgrade(a, 1.0)
    assert {k: g[G_MODE] for k, g in a.grants.items()} == {"vm/1": S, "vm/2": S}
    with pytest.raises(exceptions.LockRequestProcessed):
        table.cancel_upgrade(a, 1.0)
    assert table.upgrade(b, 1.0) is False, "b may upgrade once a's attempt is gone"


def test_downgrade_lets_shared_waiters_at_the_head_in(table: LockTable) -> None:
    a = submit(table, "a", "vm/1")
    readers = [submit(table, f"r{i}", "vm/1", mode=S) for i in range(2)]
    writer = submit(table, "w", "vm/1")
    assert table.downgrade(a, 0.0) == readers
    assert writer.state is WAITING


def test_tokens_strictly_increase_and_survive_pruning(table: LockTable) -> None:
    seen = []
    for i in range(5):
        r = submit(table, f"o{i}", "vm/1")
        seen.append(r.grants["vm/1"][G_TOKEN])
        table.release(r, 0.0)
    assert seen == sorted(set(seen))
    before = table.last_token("vm/1")
    for i in range(5000):  # enough idle keys to make the table prune vm/1
        table.release(submit(table, "filler", f"fill/{i}"), 0.0)
    assert "vm/1" not in table.keys()
    assert table.last_token("vm/1") == before
    r = submit(table, "again", "vm/1")
    assert r.grants["vm/1"][G_TOKEN] == before + 1


def test_release_all_releases_and_cancels(table: LockTable) -> None:
    held = submit(table, "t", "vm/1", "vm/2")
    blocker = submit(table, "b", "vm/3")
    waiting = submit(table, "t", "vm/3")
    other = submit(table, "o", "vm/1")
    affected, woken = table.release_all("t", 5.0)
    assert set(affected) == {held, waiting}
    assert woken == [other]
    assert (held.state, waiting.state) == (RELEASED, CANCELLED)
    assert table.holds("b", "vm/3") and blocker.state is GRANTED
    assert table.release_all("nobody", 5.0) == ([], [])


def test_status_records(table: LockTable) -> None:
    r = Request("r", ("vm/1",), (S,))
    table.submit(r, 10.0)
    w = Request("w", ("vm/1",), (X,))
    table.submit(w, 11.0)
    (status,) = table.status()
    assert status.key == "vm/1" and status.mode is S and status.token == 1
    assert [(h.owner, h.mode, h.since, h.token) for h in status.holders] == [("r", S, 10.0, 1)]
    assert [(q.owner, q.mode, q.since) for q in status.queue] == [("w", X, 11.0)]
    assert status.to_dict()["queue"] == [
        {"owner": "w", "mode": "exclusive", "since": 11.0, "upgrade": False}
    ]
    table.release(r, 12.0)
    table.release(w, 12.0)
    assert table.status() == []


def test_release_lazy_reads_the_clock_only_to_grant(table: LockTable) -> None:
    reads: list[float] = []

    def clock() -> float:
        reads.append(7.0)
        return 7.0

    a = submit(table, "a", "vm/1")
    assert not table.release_lazy(a, clock)
    assert reads == [], "an uncontended release must not read the clock"
    b = submit(table, "b", "vm/1")
    c = submit(table, "c", "vm/1")
    assert list(table.release_lazy(b, clock)) == [c]
    assert reads == [7.0]
    assert table.grants_of("vm/1")[0][G_SINCE] == 7.0, "the grant is stamped with the clock's time"
    with pytest.raises(exceptions.NotHeld):
        table.release_lazy(b, clock)
