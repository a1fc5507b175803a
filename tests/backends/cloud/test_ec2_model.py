"""EC2's answers interpreted (pure): parsing, what a poll says, how errors are classified."""

from __future__ import annotations

import pytest

from corral.backends.base import PollStatus
from corral.backends.cloud import ec2_model as m
from corral.backends.cloud import tags


def _inst(state: str, **kw: object) -> m.Instance:
    return m.Instance(id="i-0123456789abcdef0", state=m.InstanceState(state), **kw)  # type: ignore[arg-type]


def test_parse_skips_malformed_entries() -> None:
    page = {
        "Reservations": [
            {"Instances": [{"InstanceId": "i-00000001", "State": {"Name": "running"}}, 7, {}]},
            "junk",
            {"Instances": [{"InstanceId": "i-00000002", "State": {"Name": "weird"}, "Tags": 3}]},
        ]
    }
    parsed = m.parse_instances(page)
    assert [(i.id, i.state) for i in parsed] == [
        ("i-00000001", m.InstanceState.RUNNING),
        ("i-00000002", m.InstanceState.UNKNOWN),
    ]
    assert m.parse_instances({"Reservations": "x"}) == []


@pytest.mark.parametrize(
    ("inst", "age", "status"),
    [
        (None, 1.0, PollStatus.PENDING),  # not visible yet: eventual consistency
        (None, 120.0, PollStatus.FAILED),
        (None, None, PollStatus.FAILED),  # not ours to wait for
        (_inst("pending"), None, PollStatus.PENDING),
        (_inst("running"), None, PollStatus.PENDING),  # running, no address yet
        (_inst("running", private_ip="10.0.0.5"), None, PollStatus.UP),
        (_inst("running", private_ip="not an ip!"), None, PollStatus.PENDING),
        (_inst("terminated", reason="Server.SpotInstanceTermination"), None, PollStatus.FAILED),
        (_inst("stopped"), None, PollStatus.FAILED),
    ],
)
def test_poll_result(inst: m.Instance | None, age: float | None, status: PollStatus) -> None:
    assert m.poll_result(inst, address="private", age=age, grace=60).status is status


def test_failed_poll_names_the_spot_interruption() -> None:
    inst = _inst("terminated", reason="Server.SpotInstanceTermination")
    result = m.poll_result(inst, address="private", age=None, grace=60)
    assert "SpotInstanceTermination" in (result.reason or "")


def test_status_checks_gate_up() -> None:
    inst = _inst("running", public_ip="54.1.2.3")
    assert m.poll_result(inst, address="public", age=None, grace=0, checks_ok=False).status is (
        PollStatus.PENDING
    )
    up = m.poll_result(inst, address="public", age=None, grace=0, checks_ok=True)
    assert up.status is PollStatus.UP and up.address == "54.1.2.3"


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        ("RequestLimitExceeded", 503, m.ErrorKind.THROTTLED),
        ("Throttling", 400, m.ErrorKind.THROTTLED),
        (None, 429, m.ErrorKind.THROTTLED),
        ("InvalidInstanceID.NotFound", 400, m.ErrorKind.NOT_FOUND),
        (None, None, m.ErrorKind.UNKNOWN_OUTCOME),
        ("InternalError", 500, m.ErrorKind.UNKNOWN_OUTCOME),
        ("InvalidAMIID.NotFound", 400, m.ErrorKind.FATAL),
        ("UnauthorizedOperation", 403, m.ErrorKind.FATAL),
    ],
)
def test_classify(code: str | None, status: int | None, kind: m.ErrorKind) -> None:
    assert m.classify(code, status) is kind


def test_ids_in_message() -> None:
    text = "The instance IDs 'i-0123456789abcdef0, i-00000001' do not exist"
    assert m.ids_in_message(text) == {"i-0123456789abcdef0", "i-00000001"}


def test_tags_mark_only_our_pool() -> None:
    mine = tags.instance_tags("ns", "p", "p-1", 1, {"team": "x"})
    assert tags.is_ours(mine, "ns", "p")
    assert not tags.is_ours(mine, "other", "p") and not tags.is_ours(mine, "ns", "q")
    assert not tags.is_ours({}, "ns", "p")
    assert tags.from_ec2_tag_list(tags.ec2_tag_list(mine)) == mine


def test_targeted_filters_select_by_id_only_when_every_ask_may_be() -> None:
    """One selecting filter per call, in chunks of ``size``: instance ids when every VM asked
    about may be asked for by id; else every VM by name, so that a round with one look-up by
    name is still one call (two filters would be ANDed: ids and names take two calls)."""
    asks = [m.Ask(f"p-{n}", f"i-{n:08x}") for n in range(5)]
    asks.append(m.Ask("p-0", "i-00000000"))  # asked twice: once in the call
    assert m.targeted_filters(asks, 3) == [
        {"Name": "instance-id", "Values": ["i-00000000", "i-00000001", "i-00000002"]},
        {"Name": "instance-id", "Values": ["i-00000003", "i-00000004"]},
    ]
    assert m.by_id(asks) and not m.by_id([*asks, m.Ask("p-9")]) and not m.by_id([])
    assert m.targeted_filters([*asks[:2], m.Ask("p-9")], 200) == [
        {"Name": "tag:corral:vm", "Values": ["p-0", "p-1", "p-9"]}
    ]
    assert m.targeted_filters([], 200) == []
