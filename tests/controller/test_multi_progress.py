"""A multi-machine ticket under a stream of one-machine tickets, through the controller (memory
store, fake backend; issue 15): smaller tickets pass it before its pool's ``reserve_after``, and
after it the large ticket reserves VMs as they free up and is served while the stream goes on.

Breakage caught: the reservation dropped (``reserve_after`` ignored by the planner, or
``_Round.many`` not reserving): the stream then takes every VM that frees, one at a time, and the
large ticket waits until the stream stops. Checked by hand with ``reserve_after: null``: the
large ticket is still waiting at the deadline.
"""

from __future__ import annotations

import asyncio

from corral import exceptions
from corral.controller import Controller
from corral.pools.model import TicketState

from .conftest import controller

HOLD = 0.1
"""How long each small ticket holds its VM, in seconds."""

GIVE_UP = 2.0
"""How long the stream waits for its next ticket before giving its current one back anyway (a
free VM is taken in milliseconds unless the large ticket reserved it)."""


async def _relay(ctl: Controller, made: list[str], stop: asyncio.Event) -> None:
    """A stream of small tickets that never leaves two VMs free: ask for the next ticket, let it
    take the free VM (waiting up to ``GIVE_UP`` seconds for it), only then give the current one
    back, ``HOLD`` seconds after it was served."""
    current = await ctl.wait_ticket((await ctl.create_ticket(owner="s", pool="p")).id, 60)
    made.append(current.id)
    try:
        while not stop.is_set():
            await asyncio.sleep(HOLD)
            following = await ctl.create_ticket(owner="s", pool="p")
            made.append(following.id)
            try:
                following = await ctl.wait_ticket(following.id, timeout=GIVE_UP)
            except exceptions.TicketTimeout:
                pass  # the free VM is reserved for the large ticket: give ours back anyway
            await ctl.close_ticket(current.id)
            current = await ctl.wait_ticket(following.id, timeout=60)
    finally:
        await ctl.close_ticket(current.id)


async def test_a_two_machine_ticket_is_served_while_a_stream_of_small_ones_goes_on() -> None:
    """Breakage caught: no reservation past ``reserve_after`` (see the module docstring)."""
    async with controller({"max": 2, "min_ready": 2, "reserve_after": 0.5}) as ctl:
        made: list[str] = []
        stop = asyncio.Event()
        relay = asyncio.create_task(_relay(ctl, made, stop))
        try:
            await asyncio.sleep(3 * HOLD)  # the relay runs: never two VMs free at once
            big = await ctl.create_ticket(owner="big", pool="p", count=2)
            behind = len(made)
            served = await ctl.wait_ticket(big.id, timeout=60)
            assert served.state is TicketState.ASSIGNED and len(set(served.vms)) == 2
            assert served.assigned_at is not None
            assert not relay.done(), "the stream stopped: the test proved nothing"
            # smaller tickets created after the big one passed it before its bound
            after = [await ctl.get_ticket(tid) for tid in made[behind:]]
            passed = [t for t in after if (t.assigned_at or 1e300) < served.assigned_at]
            assert passed, "no smaller ticket passed the large one before reserve_after"
            await ctl.close_ticket(big.id)
        finally:
            stop.set()
            await relay
