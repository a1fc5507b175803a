"""The I/O-free acquire, wait and release flows, driven by hand with a manual clock."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.client import core, flows, models
from corral.testing import ManualClock


def _ticket(state: str, **fields: object) -> models.Ticket:
    return models.Ticket.from_json({"id": "t1", "owner": "alice", "state": state, **fields})


def _acquisition(**kw: object) -> flows.Acquisition:
    return flows.Acquisition(pool="p", key="key-0123456789", **kw)  # type: ignore[arg-type]


def test_obtain_creates_with_key_and_long_polls_until_assigned() -> None:
    clock = ManualClock(0.0)
    acq = _acquisition(timeout=100)
    flow = acq.obtain(clock)
    assert flow.pending is not None
    create = flow.pending
    assert (create.method, create.path) == ("POST", "/v1/tickets")
    assert create.headers == {"Idempotency-Key": "key-0123456789"}
    assert create.params == {"wait": 30.0}
    clock.now = 30.0
    flow.resume(_ticket("waiting"))
    assert acq.ticket is not None
    assert flow.pending is not None
    assert (flow.pending.method, flow.pending.path) == ("GET", "/v1/tickets/t1")
    flow.resume(_ticket("assigned", vm="vm-1"))
    assert flow.pending is None
    assert flow.value.vm == "vm-1"
    release = acq.release()
    assert release.pending is not None
    assert release.pending.path == "/v1/tickets/t1/close"
    release.resume(_ticket("closed"))
    assert release.pending is None


def test_obtain_times_out_by_the_clock() -> None:
    clock = ManualClock(0.0)
    flow = _acquisition(timeout=5).obtain(clock)
    assert flow.pending is not None
    assert flow.pending.params == {"wait": 5.0}
    clock.now = 5.0
    with pytest.raises(exceptions.TicketTimeout):
        flow.resume(_ticket("waiting"))
    assert flow.pending is None


def test_release_after_a_lost_answer_finds_the_ticket_by_key() -> None:
    acq = _acquisition(reconnect=0)
    flow = acq.obtain(ManualClock(0.0))
    with pytest.raises(exceptions.ServerUnreachable):
        flow.fail(exceptions.ServerUnreachable("no answer within 40 s"))
    assert acq.ticket is None
    release = acq.release(quiet=True)
    assert release.pending is not None
    assert release.pending.path == "/v1/tickets/by-key/key-0123456789"
    release.resume(_ticket("waiting"))
    assert release.pending is not None
    assert release.pending.path == "/v1/tickets/t1/close"
    release.fail(exceptions.TicketClosed("already closed"))  # nothing left to give back
    assert release.pending is None


def test_release_when_nothing_was_created() -> None:
    refused = _acquisition()
    flow = refused.obtain(ManualClock(0.0))
    with pytest.raises(exceptions.NoMatchingPool):
        flow.fail(exceptions.NoMatchingPool("no pool"))
    assert refused.release().pending is None, "a refused create created nothing"
    never_sent = _acquisition()
    assert never_sent.release().pending is None
    unknown = _acquisition()
    unknown.obtain(ManualClock(0.0))  # interrupted (Ctrl-C) while the create is in flight
    release = unknown.release()
    assert release.pending is not None
    release.fail(exceptions.TicketNotFound("no ticket with this key"))
    assert release.pending is None


def test_release_failures_raise_unless_quiet() -> None:
    acq = _acquisition(reconnect=0)
    flow = acq.obtain(ManualClock(0.0))
    flow.resume(_ticket("assigned", vm="vm-1"))
    loud = acq.release()
    with pytest.raises(exceptions.ServerUnreachable):
        loud.fail(exceptions.ServerUnreachable("down"))
    quiet = acq.release(quiet=True)
    quiet.fail(exceptions.ServerUnreachable("down"))
    assert quiet.pending is None


def test_wait_for_and_bad_arguments() -> None:
    flow = flows.wait_for("t1", None, ManualClock(0.0))
    assert flow.pending is not None
    assert flow.pending.params == {"wait": 30.0}
    with pytest.raises(exceptions.TicketClosed):
        flow.resume(_ticket("expired"))
    with pytest.raises(exceptions.InvalidInput):
        flows.wait_for("t1", -1, ManualClock(0.0))
    with pytest.raises(exceptions.InvalidInput):
        flows.wait_for("", None, ManualClock(0.0))
    with pytest.raises(exceptions.InvalidInput):
        _acquisition(timeout=-1)
    with pytest.raises(exceptions.InvalidInput):
        flows.Acquisition(tags="fedora")
    with pytest.raises(exceptions.CorralError, match="not over"):
        _ = flows.wait_for("t1", None, ManualClock(0.0)).value


def test_release_looks_up_the_key_of_the_owner_asked_for() -> None:
    acq = flows.Acquisition(pool="p", owner="carol", key="key-0123456789")
    acq.obtain(ManualClock(0.0))  # interrupted while the create is in flight
    release = acq.release()
    assert release.pending is not None
    assert release.pending.params == {"owner": "carol"}


def _pauses_then(flow: flows.Flow[object], error: exceptions.CorralError) -> list[float]:
    """Fail the pending call with ``error`` and answer every pause, until the flow sends a
    call again or gives up; the pauses it asked for."""
    pauses: list[float] = []
    flow.fail(error)
    while isinstance(flow.pending, flows.Pause):
        pauses.append(flow.pending.seconds)
        flow.resume(None)
        if isinstance(flow.pending, flows.Pause) or flow.pending is None:
            continue
        break
    return pauses


def test_create_is_retried_with_the_same_key_while_the_server_is_away() -> None:
    """Fails if a lost create is given up at once (the CLI printed "could not close the
    ticket of key ..." and left the ticket behind) or retried with a new key."""
    acq = _acquisition(timeout=600)
    flow = acq.obtain(ManualClock(0.0))
    first = flow.pending
    assert isinstance(first, core.Call)
    pauses = _pauses_then(flow, exceptions.ServerUnreachable("connection refused"))
    assert pauses == [flows.FIRST_PAUSE]
    again = flow.pending
    assert isinstance(again, core.Call)
    assert (again.method, again.path, again.headers) == (first.method, first.path, first.headers)
    flow.resume(_ticket("waiting"))
    poll = flow.pending
    assert isinstance(poll, core.Call) and poll.path == "/v1/tickets/t1"
    # the server stops during the long-poll: back off (doubling) and ask about the same ticket
    pauses = _pauses_then(flow, exceptions.ServerStopping("stopping"))
    assert pauses == [flows.FIRST_PAUSE]
    pauses += _pauses_then(flow, exceptions.ServerUnreachable("refused"))
    assert pauses == [flows.FIRST_PAUSE, flows.FIRST_PAUSE * 2]
    assert isinstance(flow.pending, core.Call) and flow.pending.path == "/v1/tickets/t1"
    flow.resume(_ticket("assigned", vm="vm-1"))
    assert flow.value.vm == "vm-1"


def test_retries_stop_when_the_pauses_exceed_the_budget() -> None:
    flow = flows.wait_for("t1", None, ManualClock(0.0), reconnect=10)
    pauses: list[float] = []
    with pytest.raises(exceptions.ServerUnreachable):
        while True:
            pauses += _pauses_then(flow, exceptions.ServerUnreachable("refused"))
    assert pauses == [0.25, 0.5, 1.0, 2.0, 4.0], "backoff doubles until the budget is spent"
    assert sum(pauses) <= 10
    # a refusal that is not "try later" is never retried
    refused = flows.wait_for("t1", None, ManualClock(0.0))
    with pytest.raises(exceptions.TicketNotFound):
        refused.fail(exceptions.TicketNotFound("no ticket"))


def test_release_is_retried_until_the_ticket_is_closed() -> None:
    """Fails if a release that meets a restarting server gives up: the ticket stays open."""
    acq = _acquisition()
    flow = acq.obtain(ManualClock(0.0))
    flow.resume(_ticket("assigned", vm="vm-1"))
    release = acq.release(quiet=True)
    assert _pauses_then(release, exceptions.ServerUnreachable("refused")) == [0.25]
    assert isinstance(release.pending, core.Call)
    assert release.pending.path == "/v1/tickets/t1/close"
    release.resume(_ticket("closed"))
    assert release.pending is None


def test_wait_for_with_no_time_left_still_asks_once() -> None:
    flow = flows.wait_for("t1", 0, ManualClock(0.0))
    assert isinstance(flow.pending, core.Call)
    flow.resume(_ticket("assigned", vm="vm-1"))
    assert flow.value.vm == "vm-1"
    late = flows.wait_for("t1", 0, ManualClock(0.0))
    with pytest.raises(exceptions.TicketTimeout):
        late.resume(_ticket("waiting"))
