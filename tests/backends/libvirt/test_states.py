"""vdsm's named states from libvirt lifecycle events (the pure table).

Breakages these catch: a VM shown Up before its guest reported ready; Down left by a late event
(vdsm's DoubleDown); a resume after a pause forgetting whether the guest was ready.
"""

from __future__ import annotations

from corral.backends.libvirt.states import (
    TRANSITIONS,
    Event,
    VmState,
    from_domain_state,
    next_state,
)


def run(events: list[Event], ready_after: Event | None = None) -> list[VmState]:
    state, ready, seen = VmState.WAIT_FOR_LAUNCH, False, []
    for event in events:
        ready = ready or event is Event.GUEST_READY
        state = next_state(state, event, ready=ready)
        seen.append(state)
    return seen


def test_a_normal_life() -> None:
    assert run(
        [
            Event.DEFINED,
            Event.STARTED,
            Event.GUEST_READY,
            Event.SUSPENDED,
            Event.RESUMED,
            Event.SHUTDOWN,
            Event.STOPPED,
            Event.UNDEFINED,
        ]
    ) == [
        VmState.WAIT_FOR_LAUNCH,
        VmState.POWERING_UP,
        VmState.UP,
        VmState.PAUSED,
        VmState.UP,
        VmState.POWERING_DOWN,
        VmState.DOWN,
        VmState.DOWN,
    ]


def test_resumed_before_ready_is_still_powering_up() -> None:
    assert run([Event.STARTED, Event.SUSPENDED, Event.RESUMED]) == [
        VmState.POWERING_UP,
        VmState.PAUSED,
        VmState.POWERING_UP,
    ]


def test_down_is_final() -> None:
    for event in Event:
        assert next_state(VmState.DOWN, event, ready=True) is VmState.DOWN


def test_crash_and_unexpected_events() -> None:
    assert run([Event.STARTED, Event.CRASHED]) == [VmState.POWERING_UP, VmState.DOWN]
    # an event with no entry leaves the state as it is
    assert next_state(VmState.UP, Event.DEFINED) is VmState.UP
    assert (VmState.UP, Event.DEFINED) not in TRANSITIONS


def test_domain_state_codes_after_a_restart() -> None:
    assert from_domain_state(1) is VmState.POWERING_UP
    assert from_domain_state(1, ready=True) is VmState.UP
    assert from_domain_state(3) is VmState.PAUSED
    assert from_domain_state(5) is VmState.DOWN
    assert from_domain_state(99) is VmState.DOWN


def test_the_docs_show_the_current_table() -> None:
    from pathlib import Path

    from corral.backends.libvirt.states import markdown_table

    docs = Path(__file__).resolve().parents[3] / "docs" / "libvirt.md"
    assert markdown_table() in docs.read_text(encoding="utf-8"), "regenerate the table in docs"
