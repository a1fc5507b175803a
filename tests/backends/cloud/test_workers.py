"""The free worker threads of a cloud backend, handed out by priority.

Breakages caught: a first-come queue (a describe waits for a thread behind every create of a
storm: the polls starve until the creates are done), a cancelled waiter that takes a thread for
good, more threads handed out than there are.
"""

from __future__ import annotations

import asyncio

from corral.backends.cloud.workers import Workers


async def test_a_freed_thread_goes_to_the_best_waiter_first() -> None:
    workers = Workers(1)
    await workers.take(1)  # a create holds the only thread
    order: list[str] = []

    async def call(what: str, priority: int) -> None:
        await workers.take(priority)
        order.append(what)

    creates = [asyncio.ensure_future(call(f"create-{i}", 1)) for i in range(3)]
    await asyncio.sleep(0)
    describe = asyncio.ensure_future(call("describe", 0))
    await asyncio.sleep(0)
    assert order == []  # nobody gets a thread that is not free
    for _ in range(4):
        workers.give_back()
        await asyncio.sleep(0)
    await asyncio.gather(*creates, describe)
    assert order == ["describe", "create-0", "create-1", "create-2"]
    assert workers.free == 0  # the last one still holds its thread


async def test_a_cancelled_waiter_takes_no_thread() -> None:
    workers = Workers(1)
    await workers.take()
    quitter = asyncio.ensure_future(workers.take())
    stayer = asyncio.ensure_future(workers.take())
    await asyncio.sleep(0)
    quitter.cancel()
    await asyncio.sleep(0)
    workers.give_back()
    await asyncio.wait_for(stayer, 5)
    workers.give_back()
    assert workers.free == 1


async def test_reserved_threads_are_kept_for_describes_while_creates_wait() -> None:
    """Breakage caught: creates waiting for their slots holding every thread, so that a poll's
    describe waits for a create to end before it may even ask for its slot."""
    workers = Workers(4, reserve=1)
    for _ in range(3):
        await workers.take(1)
    fourth = asyncio.ensure_future(workers.take(1))
    await asyncio.sleep(0)
    assert not fourth.done() and workers.free == 1  # the last thread is the describes'
    await asyncio.wait_for(workers.take(0), 5)  # a describe takes it at once
    workers.give_back()  # the describe is done: its thread is the reserve again
    await asyncio.sleep(0)
    assert not fourth.done()
    workers.give_back()  # a create is done: the waiting create gets its thread
    await asyncio.wait_for(fourth, 5)
    assert workers.free == 1
