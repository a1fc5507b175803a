"""The fencing rule (pure) and the ``Fence`` value: what a fenced backend refuses, what it
records, and bad fences named.

Breakages caught: an equal or newer token refused, an older one admitted, a survivor (another
holder) not recording its token, a cloud recording on every grant of one holder (a CreateTags
per VM on the normal path), an unreadable record honoured as a fence.
"""

from __future__ import annotations

import logging

import pytest

from corral import exceptions
from corral.backends import fencing
from corral.backends.base import Fence

A = Fence(5, "host-a#1")


def test_an_older_fence_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    fencing.admit("p", "terminate", "vm-1", None, A)  # nothing recorded: admitted
    fencing.admit("p", "terminate", "vm-1", Fence(5, "host-a#1"), A)  # the same grant
    fencing.admit("p", "terminate", "vm-1", Fence(4, "host-b#1"), A)  # older: admitted
    with caplog.at_level(logging.WARNING, logger="corral.backends.fencing"):
        with pytest.raises(exceptions.StaleFence) as caught:
            fencing.admit("p", "terminate", "vm-1", Fence(6, "host-b#2"), A)
    assert caught.value.code == "backend_stale_fence"
    assert isinstance(caught.value, exceptions.StaleToken)
    assert "fencing token 5 of host-a#1 is older than the machine's 6 of host-b#2" in str(
        caught.value
    )
    assert [r.levelno for r in caplog.records] == [logging.WARNING]


@pytest.mark.parametrize(
    ("recorded", "every_grant", "record"),
    [
        (None, False, True),  # nothing recorded (a machine from before fencing)
        (Fence(3, "host-a#1"), True, True),  # libvirt: every newer grant
        (Fence(3, "host-a#1"), False, False),  # cloud: the same holder's older grant
        (Fence(3, "host-b#1"), False, True),  # cloud: a survivor taking over
        (Fence(5, "host-a#1"), True, False),  # the same grant
        (Fence(9, "host-b#1"), True, False),  # newer: never (admit refuses it anyway)
    ],
)
def test_when_a_caller_records_its_fence(
    recorded: Fence | None, every_grant: bool, record: bool
) -> None:
    assert fencing.must_record(recorded, A, every_grant=every_grant) is record


def test_parse_reads_only_whole_records() -> None:
    assert fencing.parse("12", "h#1") == Fence(12, "h#1")
    for token, holder in (("", "h"), ("12", ""), ("x", "h"), ("-1", "h"), ("0", "h"), (None, None)):
        assert fencing.parse(token, holder) is None
    # a damaged record is no record, whatever str.isdigit thinks of it (superscripts, other
    # scripts' digits): never a ValueError that fails every fenced call on the machine
    for damaged in ("\u00b2", "1\u00b2", "\u0663", "\u2460"):
        assert fencing.parse(damaged, "h#1") is None


@pytest.mark.parametrize(
    ("token", "holder", "words"),
    [
        (0, "h", "positive integer"),
        (True, "h", "positive integer"),
        (1, "", "1-200 printable"),
        (1, " h", "1-200 printable"),
        (1, "a\nb", "1-200 printable"),
        (1, "x" * 201, "1-200"),
    ],
)
def test_bad_fences_are_named(token: int, holder: str, words: str) -> None:
    with pytest.raises(exceptions.InvalidInput, match=words):
        Fence(token, holder)
