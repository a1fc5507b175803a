"""The history checkers of the chaos tests on made-up histories: each violation they exist
to find is found, and a clean history passes (a checker that finds nothing is no check)."""

from __future__ import annotations

from .test_chaos_serve import check_backend_lines, check_lock_rows


def test_a_clean_lock_history_passes() -> None:
    """Breakage caught: a checker that reports hand-overs, releases or shared holders as
    violations (the chaos test would fail on correct code)."""
    rows = [
        ("INSERT", "vm/a", "t1", "h1", "x", 1),
        ("DELETE", "vm/a", "t1", "h1", "x", 1),
        ("INSERT", "vm/a", "t2", "h2", "s", 2),
        ("INSERT", "vm/a", "t3", "h3", "s", 3),
        ("DELETE", "vm/a", "t2", "h2", "s", 2),
        ("UPDATE", "vm/a", "t3", "h3", "x", 4),  # an upgrade: a new token
        ("INSERT", "vm/b", "t4", "h1", "x", 1),
    ]
    assert check_lock_rows(rows) == (5, [])


def test_conflicting_grants_and_tokens_that_do_not_increase_are_found() -> None:
    """Breakages caught: a checker blind to two exclusive holders of one key at once (two
    hosts acting on one VM), to a shared grant beside an exclusive one, or to a token that
    repeats or goes back (a lock table that lost its counter)."""
    two_holders = [
        ("INSERT", "vm/a", "t1", "h1", "x", 1),
        ("INSERT", "vm/a", "t2", "h2", "x", 2),
    ]
    shared_beside = [
        ("INSERT", "vm/a", "t1", "h1", "x", 1),
        ("INSERT", "vm/a", "t2", "h2", "s", 2),
    ]
    token_back = [
        ("INSERT", "vm/a", "t1", "h1", "x", 5),
        ("DELETE", "vm/a", "t1", "h1", "x", 5),
        ("INSERT", "vm/a", "t2", "h2", "x", 5),
    ]
    for rows, found in [(two_holders, "while"), (shared_beside, "while"), (token_back, "after")]:
        _, bad = check_lock_rows(rows)
        assert len(bad) == 1 and found in bad[0], (rows, bad)


def test_overlapping_backend_calls_of_two_hosts_on_one_vm_are_found() -> None:
    """Breakages caught: a checker blind to a survivor's delete overlapping the dead host's
    create of the same machine, or one that flags one host's sequential calls, or calls on
    different machines."""
    clean = [
        "new p-1 h1 10 start 100.0",
        "new p-2 h2 11 start 100.1",
        "new p-1 h1 10 end 100.3",
        "delete p-1 h2 12 start 100.4",  # after the create ended
        "new p-2 h2 11 end 100.5",
        "delete p-1 h2 12 end 100.6",
    ]
    assert check_backend_lines(clean) == (3, [])
    overlapping = [
        "new p-1 h1 10 start 100.0",
        "delete p-1 h2 12 start 101.0",
        "delete p-1 h2 12 end 101.1",
        "new p-1 h1 10 end 103.0",
    ]
    calls, bad = check_backend_lines(overlapping)
    assert calls == 2 and len(bad) == 1 and "overlaps delete on h2" in bad[0]
    never_ended = ["new p-1 h1 10 start 100.0", "delete p-1 h2 12 start 101.0"]
    assert len(check_backend_lines(never_ended)[1]) == 1  # a killed call counts to its timeout
