"""The client's calls for the maintenance commands (issue 12) and ticket metadata (issue 15).

What each test catches: metadata or filters not sent (or sent in a shape the API does not
read: repeated ``KEY=VALUE`` query values), bad arguments sent instead of refused locally.
"""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.client import core


def test_ticket_metadata_and_list_filters() -> None:
    call = core.create_ticket(pool="p", meta={"build": "42"})
    assert call.body == {"pool": "p", "tags": [], "priority": 0, "meta": {"build": "42"}}
    listed = core.list_tickets(state=["waiting", "assigned"], meta={"build": "42"}, limit=5)
    assert dict(listed.params) == {
        "state": ["waiting", "assigned"],
        "meta": ["build=42"],
        "limit": 5,
    }
    assert dict(core.list_tickets(state="closed").params) == {"state": ["closed"]}
    vms = core.list_vms(ticket_meta={"build": "42", "arch": "x86"})
    assert dict(vms.params) == {"ticket_meta": ["build=42", "arch=x86"]}


def test_terminate_if_states_and_summary() -> None:
    call = core.terminate_vm("vm-1", if_states=["ready", "in_use"])
    assert (call.method, call.path) == ("POST", "/v1/vms/vm-1/terminate")
    assert dict(call.params) == {"if_state": ["ready", "in_use"]}
    assert dict(core.terminate_vm("vm-1").params) == {}
    assert core.summary(pool="small").path == "/v1/summary"
    assert dict(core.summary(pool="small").params) == {"pool": "small"}


@pytest.mark.parametrize(
    "make",
    [
        lambda: core.list_tickets(limit=0),
        lambda: core.list_tickets(limit=True),
        lambda: core.list_tickets(meta={"a=b": "c"}),
        lambda: core.list_tickets(meta={"": "c"}),
        lambda: core.list_vms(ticket_meta={"k": 1}),  # type: ignore[dict-item]
        lambda: core.terminate_vm("vm-1", if_states=[]),
    ],
)
def test_bad_arguments_are_refused_before_sending(make: object) -> None:
    with pytest.raises(exceptions.InvalidInput):
        make()  # type: ignore[operator]
