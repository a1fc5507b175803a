"""The lifecycle tables, checked exhaustively: every event in every state, the derived transition
tables against an independent statement of them, and the effects each move carries."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.pools import lifecycle
from corral.pools.lifecycle import (
    ALIVE_VM_STATES,
    DEAD_VM_STATES,
    TICKET_RULES,
    TICKET_TRANSITIONS,
    VM_RULES,
    VM_TRANSITIONS,
    Effect,
    TicketEvent,
    TicketState,
    VMEvent,
    VMState,
    ticket_move,
    vm_move,
)

V = VMState
T = TicketState

# Written out by hand, independently of the rules: the moves SPEC §5 allows.
EXPECTED_VM = {
    V.SPAWNING: {V.READY, V.TERMINATING, V.FAILED},
    V.READY: {V.IN_USE, V.HELD, V.TERMINATING, V.FAILED},
    V.IN_USE: {V.RELEASING, V.HELD, V.TERMINATING, V.FAILED},
    V.RELEASING: {V.READY, V.TERMINATING, V.FAILED},
    # held for debugging (Nodepool's hold): never reused, terminated when the hold ends
    V.HELD: {V.TERMINATING, V.FAILED},
    # an external VM (registered, or being forgotten) ends forgotten: no backend call (issue 15)
    V.TERMINATING: {V.TERMINATED, V.FAILED, V.FORGOTTEN},
    V.TERMINATED: set(),
    V.FAILED: set(),
    V.FORGOTTEN: set(),
}
EXPECTED_TICKET = {
    T.WAITING: {T.ASSIGNED, T.CANCELLED, T.EXPIRED, T.FAILED},
    T.ASSIGNED: {T.CLOSED, T.EXPIRED, T.FAILED},
    T.CLOSED: set(),
    T.CANCELLED: set(),
    T.EXPIRED: set(),
    T.FAILED: set(),
}


def test_derived_tables_are_the_expected_ones() -> None:
    assert {s: set(t) for s, t in VM_TRANSITIONS.items()} == EXPECTED_VM
    assert {s: set(t) for s, t in TICKET_TRANSITIONS.items()} == EXPECTED_TICKET


@pytest.mark.parametrize("event", list(VMEvent))
@pytest.mark.parametrize("state", list(VMState))
def test_every_vm_event_in_every_state(event: VMEvent, state: VMState) -> None:
    rule = VM_RULES[event]
    if state.value in rule.sources:
        move = vm_move(event, state)
        assert move.expect == (state.value,)
        assert move.state == rule.target
    else:
        with pytest.raises(exceptions.VMStateTransitionError, match=f"{state}.*{event}"):
            vm_move(event, state)


@pytest.mark.parametrize("event", list(TicketEvent))
@pytest.mark.parametrize("state", list(TicketState))
def test_every_ticket_event_in_every_state(event: TicketEvent, state: TicketState) -> None:
    rule = TICKET_RULES[event]
    if state.value in rule.sources:
        assert ticket_move(event, state).expect == (state.value,)
    else:
        with pytest.raises(exceptions.TicketStateTransitionError):
            ticket_move(event, state)


def test_a_move_without_current_state_expects_every_source() -> None:
    move = vm_move(VMEvent.TERMINATE_REQUESTED)
    assert move.expect == ("held", "ready", "releasing", "spawning")
    assert move.state == "terminating"


def test_no_event_leaves_a_dead_state_and_every_alive_state_can_die() -> None:
    for event, rule in VM_RULES.items():
        assert not rule.sources & {s.value for s in DEAD_VM_STATES}, event
    for state in ALIVE_VM_STATES:
        assert (
            VM_TRANSITIONS[state] & DEAD_VM_STATES or VMState.TERMINATING in (VM_TRANSITIONS[state])
        ), state


def test_effects_follow_the_target_state() -> None:
    for event, rule in VM_RULES.items():
        target = rule.target
        # whatever is gone for good is forgotten, and nothing else is
        assert (Effect.FORGET in rule.effects) == (
            target in {"terminated", "failed", "forgotten"}
        ), event
        # a release-cleanup is started exactly when a VM starts releasing
        assert (Effect.SUBMIT_RELEASE in rule.effects) == (target == "releasing"), event
        if Effect.SUBMIT_TERMINATE in rule.effects:
            assert target == "terminating", event
        if Effect.KICK_ASSIGN in rule.effects:
            # a VM becoming free for a ticket, or a lost one whose ticket must be re-served
            assert target in ("ready", "failed"), event
    # every move into terminating starts a termination, but the spawn's rollback, which
    # terminates in its own task
    into = {e for e, r in VM_RULES.items() if r.target == "terminating"}
    submitting = {e for e in into if Effect.SUBMIT_TERMINATE in VM_RULES[e].effects}
    assert into - submitting == {VMEvent.SPAWN_ABANDONED}


def test_forgetting_never_reaches_a_vm_whose_task_may_destroy_it() -> None:
    """Issue 15: forget marks a VM external and retires it in one write. A spawning VM (its
    spawn's rollback terminates what the backend made) or one already terminating (its task may
    be calling the backend) must not take it; only a terminating VM ends ``forgotten``, and only
    a VM in use is merely marked. Breakage caught: ``spawning`` or ``terminating`` added to
    ``FORGET_REQUESTED``'s sources, or ``FORGOTTEN`` reachable from anything but terminating."""
    assert VM_RULES[VMEvent.FORGET_REQUESTED].sources == {"ready", "releasing", "held"}
    assert VM_RULES[VMEvent.FORGET_REQUESTED].target == "terminating"
    assert VM_RULES[VMEvent.FORGET_MARKED].sources == {"in_use"}
    assert VM_RULES[VMEvent.FORGET_MARKED].target is None
    into = {e for e, r in VM_RULES.items() if r.target == "forgotten"}
    assert into == {VMEvent.FORGOTTEN}
    assert VM_RULES[VMEvent.FORGOTTEN].sources == {"terminating"}
    assert VM_RULES[VMEvent.REGISTERED].sources == set()
    assert VM_RULES[VMEvent.REGISTERED].target == "ready"
    assert VMState.FORGOTTEN in DEAD_VM_STATES
    assert VMState.FORGOTTEN not in lifecycle.PURGED_VM_STATES  # the tombstone is kept


def test_store_atomic_writes_come_from_the_table() -> None:
    assert VM_RULES[VMEvent.ASSIGNED].sources == {"ready"}
    assert VM_RULES[VMEvent.ASSIGNED].target == "in_use"
    assert TICKET_RULES[TicketEvent.ASSIGNED].sources == {"waiting"}
    for state, event in lifecycle.VM_FREE_EVENTS.items():
        assert VM_RULES[event].target == state.value
        assert VM_RULES[event].sources == {"in_use"}
    assert lifecycle.HOLD_WINS in lifecycle.VM_FREE_EVENTS


def test_ticket_end_events() -> None:
    for state in lifecycle.ENDED_TICKET_STATES:
        assert TICKET_RULES[lifecycle.ticket_end_event(state)].target == state.value
    with pytest.raises(exceptions.TicketStateTransitionError):
        lifecycle.ticket_end_event(TicketState.WAITING)


def test_effects_into_a_state() -> None:
    assert Effect.FORGET in lifecycle.effects_into("failed")
    assert Effect.KICK_ASSIGN in lifecycle.effects_into("ready")
    assert Effect.SUBMIT_TERMINATE not in lifecycle.effects_into("terminating")
