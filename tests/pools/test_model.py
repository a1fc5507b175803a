"""VM and ticket lifecycles: the tables are the only legal moves; illegal ones change nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import exceptions
from corral.pools.model import (
    ALIVE_VM_STATES,
    TICKET_TRANSITIONS,
    VM,
    VM_TRANSITIONS,
    Ticket,
    TicketState,
    VMState,
    check_ticket_transition,
    check_vm_transition,
)


def _vm(state: VMState = VMState.SPAWNING) -> VM:
    return VM(name="p-1", pool="p", state=state, created_at=0.0, state_since=0.0)


def _ticket(state: TicketState = TicketState.WAITING) -> Ticket:
    return Ticket(id="t", owner="o", state=state, created_at=0.0, expires_at=None)


def test_tables_cover_every_state() -> None:
    assert set(VM_TRANSITIONS) == set(VMState)
    assert set(TICKET_TRANSITIONS) == set(TicketState)


def test_spec_paths_are_legal() -> None:
    path = [
        VMState.SPAWNING,
        VMState.READY,
        VMState.IN_USE,
        VMState.RELEASING,
        VMState.READY,
        VMState.TERMINATING,
        VMState.TERMINATED,
    ]
    vm = _vm()
    for target in path[1:]:
        vm = vm.with_state(target, 1.0)
    assert vm.state is VMState.TERMINATED and not vm.alive
    # a spawning VM can be terminated (resalloc cannot)
    assert _vm().with_state(VMState.TERMINATING, 1.0).state is VMState.TERMINATING
    assert (
        _ticket().with_state(TicketState.ASSIGNED).with_state(TicketState.CLOSED).state == "closed"
    )


@pytest.mark.parametrize("final", [VMState.TERMINATED, VMState.FAILED, VMState.FORGOTTEN])
def test_final_vm_states_are_terminal(final: VMState) -> None:
    assert VM_TRANSITIONS[final] == frozenset()
    assert final not in ALIVE_VM_STATES


def test_terminating_only_ends_in_a_dead_state() -> None:
    # a VM is never dropped while the backend may still have it: terminating ends in
    # terminated (confirmed) or failed (a rolled-back spawn, confirmed gone), or, for an
    # external VM that corral must not destroy, forgotten (its record kept as a tombstone)
    assert VM_TRANSITIONS[VMState.TERMINATING] == {
        VMState.TERMINATED,
        VMState.FAILED,
        VMState.FORGOTTEN,
    }


@given(st.lists(st.sampled_from(list(VMState)), max_size=30))
def test_random_vm_walks_follow_the_table(targets: list[VMState]) -> None:
    vm = _vm()
    for target in targets:
        if target in VM_TRANSITIONS[vm.state]:
            vm = vm.with_state(target, 2.0)
            assert vm.state is target
        else:
            before = vm
            with pytest.raises(exceptions.VMStateTransitionError):
                vm.with_state(target, 2.0)
            assert vm == before


@given(st.lists(st.sampled_from(list(TicketState)), max_size=10))
def test_random_ticket_walks_follow_the_table(targets: list[TicketState]) -> None:
    ticket = _ticket()
    for target in targets:
        if target in TICKET_TRANSITIONS[ticket.state]:
            ticket = ticket.with_state(target)
        else:
            with pytest.raises(exceptions.TicketStateTransitionError):
                check_ticket_transition(ticket.state, target)
    assert ticket.open == (ticket.state in (TicketState.WAITING, TicketState.ASSIGNED))


def test_errors_name_both_states() -> None:
    with pytest.raises(exceptions.VMStateTransitionError, match="terminated to ready"):
        check_vm_transition(VMState.TERMINATED, VMState.READY)
