"""The lock manager's SQL batcher on the event loop (``corral.cluster.loopsql.LoopBatcher``).

Each test names the breakage it catches; the breakages are kept runnable in ``tests/mutants.py``
(``loopsql-*``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from corral.cluster.batcher import Command
from corral.cluster.loopsql import LoopBatcher

from .conftest import eventually


@pytest.fixture
async def batcher(pg_url: str) -> AsyncIterator[LoopBatcher]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (n int)")
    b = await LoopBatcher(pg_url, name="test").start()
    try:
        yield b
    finally:
        await b.aclose(30.0)


def _send(b: LoopBatcher, sql: str, *params: Any, rows: bool = False) -> asyncio.Future[Any]:
    """Submit one command; its future gets the result or the error."""
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def done(result: Any, error: BaseException | None) -> None:
        if error is None:
            fut.set_result(result)
        else:
            fut.set_exception(error)

    b.submit(Command(sql, params, done, rows))
    return fut


async def test_one_turn_of_the_loop_is_one_transaction(batcher: LoopBatcher) -> None:
    """Commands submitted in one turn share one transaction (one commit: a release and the next
    acquire, contenders' grants), and a transaction-local setting ends with it.
    Breakage caught: each command sent alone (no shared commit), or a batch split."""
    first = batcher.transactions
    futs = [_send(batcher, "SELECT txid_current()::text") for _ in range(10)]
    setting = [
        _send(batcher, "SELECT set_config('synchronous_commit', 'off', true)"),
        _send(batcher, "SELECT current_setting('synchronous_commit')"),
    ]
    txids = await asyncio.wait_for(asyncio.gather(*futs), 30)
    assert len(set(txids)) == 1
    assert (await asyncio.wait_for(setting[1], 30)) == "off"
    assert batcher.transactions == first + 1
    # the next turn is a new transaction, with the setting back to its default
    later = await asyncio.wait_for(
        _send(batcher, "SELECT current_setting('synchronous_commit')"), 30
    )
    assert later == "on"
    assert await asyncio.wait_for(_send(batcher, "SELECT txid_current()::text"), 30) != txids[0]


async def test_call_runs_after_everything_submitted_before_it(batcher: LoopBatcher) -> None:
    """The blocking ``call`` (``status()``, ``release_all()``) sees a batch in flight and the
    commands queued behind it, as the thread's queue order did.
    Breakage caught: ``call`` jumping the queue (a release just sent missing from status)."""
    # in flight for a while: a fast batch could be answered between two polls of the condition
    in_flight = _send(batcher, "INSERT INTO t SELECT 1 FROM pg_sleep(0.5)")
    await eventually(lambda: batcher._sent is not None, 30)
    queued = _send(batcher, "INSERT INTO t VALUES (2)")
    assert batcher.call("SELECT count(*) FROM t", ()) == "2"
    assert in_flight.done() and queued.done()
    rows = batcher.call("SELECT n, n * 10 FROM t ORDER BY n", (), rows=True)
    assert rows == [("1", "10"), ("2", "20")]
    # from another thread, too
    assert await asyncio.to_thread(batcher.call, "SELECT count(*) FROM t", ()) == "2"


async def test_parameters_arrive_unchanged(batcher: LoopBatcher) -> None:
    """Parameters are escaped literals: quotes, backslashes, placeholders, separators, UTF-8.
    Breakage caught: values pasted between quotes without escaping (an owner named ``o'k``
    breaks the batch, or worse, injects SQL)."""
    values = [
        "o'k",
        "a\\b",
        "%s %% x",
        "vm/a\x1fvm/b",
        "é ✓ 😀",
        "line\nnext",
        "''; DROP TABLE t; --",
    ]
    for value in values:
        got = await asyncio.wait_for(_send(batcher, "SELECT %s::text", value), 30)
        assert got == value
    assert await asyncio.wait_for(_send(batcher, "SELECT %s::text IS NULL", None), 30) == "t"
    assert await asyncio.wait_for(_send(batcher, "SELECT %s + 1", 41), 30) == "42"
    # numbers read the same wherever they land: after a minus (no "--" comment), non-finite
    assert await asyncio.wait_for(_send(batcher, "SELECT 1 -%s", -5), 30) == "6"
    assert await asyncio.wait_for(_send(batcher, "SELECT %s::float8", 0.1), 30) == "0.1"
    assert await asyncio.wait_for(_send(batcher, "SELECT %s::float8", float("inf")), 30) == (
        "Infinity"
    )
    assert await asyncio.wait_for(_send(batcher, "SELECT %s::text", True), 30) == "true"
    assert batcher.call("SELECT count(*) FROM t", ()) == "0"


async def test_a_command_that_cannot_be_rendered_fails_alone(batcher: LoopBatcher) -> None:
    """A command whose parameters cannot be rendered (a wrong count, text that cannot be
    encoded: programming errors) fails through its own callback; the commands beside and behind
    it are sent and answered. Breakage caught: the batch marked sent before it was rendered,
    which left every later lock call of the host unanswered (review of issue 11)."""
    futs = [
        _send(batcher, "INSERT INTO t VALUES (1)"),
        _send(batcher, "SELECT %s::text, %s::text", "only one"),
        _send(batcher, "SELECT %s::text", "lone \udc80 surrogate"),
        _send(batcher, "INSERT INTO t VALUES (2)"),
    ]
    results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 30)
    assert isinstance(results[1], ValueError) and isinstance(results[2], UnicodeError)
    assert not isinstance(results[0], BaseException) and not isinstance(results[3], BaseException)
    assert await asyncio.wait_for(_send(batcher, "SELECT count(*) FROM t"), 30) == "2"


async def test_an_error_fails_the_whole_batch_and_commits_nothing(batcher: LoopBatcher) -> None:
    """A failing command rolls its batch back and fails every command of it; the connection
    goes on. Breakage caught: half a batch committed, or its other commands told success."""
    futs = [
        _send(batcher, "INSERT INTO t VALUES (1)"),
        _send(batcher, "SELECT 1 / 0"),
        _send(batcher, "INSERT INTO t VALUES (2)"),
    ]
    results = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), 30)
    assert all(isinstance(r, psycopg.errors.DivisionByZero) for r in results)
    assert batcher.call("SELECT count(*) FROM t", ()) == "0"


async def test_a_terminated_connection_runs_the_batch_again(
    batcher: LoopBatcher, pg_url: str
) -> None:
    """``pg_terminate_backend`` while a batch is in flight, and while idle: the batch runs on
    a new connection and answers; nothing is lost. Breakage caught: the in-flight batch
    dropped with its connection (its caller waits forever), or a dead connection kept."""
    pid = batcher.backend_pid()
    slow = _send(batcher, "SELECT pg_sleep(0.3)::text || 'done'")
    await eventually(lambda: batcher._sent is not None, 30)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert await asyncio.wait_for(slow, 60) == "done"
    assert batcher.reconnects >= 1 and batcher.backend_pid() not in (None, pid)
    pid = batcher.backend_pid()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    assert await asyncio.wait_for(_send(batcher, "INSERT INTO t VALUES (3)"), 60) is None
    assert batcher.call("SELECT count(*) FROM t", ()) == "1"


async def test_a_notify_read_with_a_batchs_answer_is_delivered(batcher: LoopBatcher) -> None:
    """A NOTIFY that arrives in the same read as a batch's results (here the batch's own, sent
    at its commit, between its last result and the end of the answer) reaches ``on_notify``
    although nothing more comes on the socket. Breakage caught: notifications collected only
    before the results are taken (libpq parses such a NOTIFY only while the results are
    taken): a lock waiter whose grant came that way waits forever (seen in the 4-process
    bench)."""
    notes: asyncio.Queue[str] = asyncio.Queue()
    batcher.on_notify = notes.put_nowait
    listened = _send(batcher, "SELECT 'listening'")
    batcher.listen("ch_test")
    await asyncio.wait_for(listened, 30)
    futs = [
        _send(batcher, "SELECT 1"),
        _send(batcher, "SELECT pg_notify('ch_test', 'x')::text"),
        _send(batcher, "SELECT 2"),
    ]
    await asyncio.wait_for(asyncio.gather(*futs), 30)
    assert await asyncio.wait_for(notes.get(), 10) == "x"
    with pytest.raises(ValueError, match="channel"):
        batcher.listen("Bad Channel")
