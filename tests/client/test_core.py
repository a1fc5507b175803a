"""The I/O-free client core: request descriptions, error decoding, lease arithmetic."""

from __future__ import annotations

import json

import pytest

from corral import exceptions
from corral.client import core, models


def _error(code: str, message: str) -> bytes:
    return json.dumps({"error": {"code": code, "message": message}}).encode()


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("ticket_not_found", exceptions.TicketNotFound),
        ("forbidden", exceptions.Forbidden),
        ("invalid_input", exceptions.InvalidInput),
        ("ticket_closed", exceptions.TicketClosed),
        ("lock_timeout", exceptions.LockTimeout),
    ],
)
def test_errors_decode_to_their_class(code: str, cls: type[exceptions.CorralError]) -> None:
    with pytest.raises(cls, match="the message") as info:
        core.decode(cls.http_status, _error(code, "the message"))
    assert type(info.value) is cls


def test_unknown_code_and_garbage_bodies() -> None:
    with pytest.raises(exceptions.CorralError, match="from the future"):
        core.decode(418, _error("brand_new_code", "from the future"))
    with pytest.raises(exceptions.CorralError, match="HTTP 502: <html>"):
        core.decode(502, b"<html>bad gateway</html>")
    with pytest.raises(exceptions.CorralError, match="not JSON"):
        core.decode(200, b"<html>")


def test_parse_typed_result_and_bad_shape() -> None:
    call = core.get_ticket("t1")
    body = json.dumps({"id": "t1", "owner": "alice", "state": "waiting", "new": 1}).encode()
    ticket = core.parse(call, 200, body)
    assert isinstance(ticket, models.Ticket)
    assert ticket.owner == "alice"
    with pytest.raises(exceptions.CorralError, match="cannot read"):
        core.parse(call, 200, b'{"id": "t1"}')


def test_calls_describe_requests() -> None:
    call = core.create_ticket(pool="p", tags=("a",), priority=2)
    assert (call.method, call.path) == ("POST", "/v1/tickets")
    assert call.body == {"pool": "p", "tags": ["a"], "priority": 0 + 2}
    poll = core.get_ticket("a/b", wait=120)
    assert poll.path == "/v1/tickets/a%2Fb"
    assert poll.params == {"wait": core.MAX_WAIT_PER_REQUEST}
    assert core.stop_task("t", force=True).params == {"force": "true"}
    assert core.list_vms(pool="p").params == {"pool": "p"}


def test_renew_interval_is_a_third_of_the_lease_left() -> None:
    ticket = models.Ticket(id="t", owner="o", state="assigned", expires_at=130.0, ttl=90)
    assert core.renew_interval(ticket, now=100.0) == pytest.approx(10.0)
    assert core.renew_interval(ticket, now=200.0) == 0.5
    forever = models.Ticket(id="t", owner="o", state="assigned")
    assert core.renew_interval(forever, now=0) == 60.0


def test_assigned_or_raise() -> None:
    with pytest.raises(exceptions.TicketClosed, match="expired"):
        core.assigned_or_raise(models.Ticket(id="t", owner="o", state="expired"))
