"""The VM and ticket lifecycles: states, the events that move them, and what each move causes.

This is the one place that knows the lifecycle (SPEC §5), in h11's shape: the table decides, the
shell acts. Every state change of a VM or a ticket is an *event* looked up here, which gives

- the states the record may be in for the event to apply (``sources``): a store write is
  conditional on them, so a record that moved meanwhile is left alone;
- the state it moves to (``target``; ``None`` when the event changes other fields only);
- the *effects* the shell must carry out once the write succeeded (submit a termination, kick the
  assignment, ...).

:func:`vm_move` and :func:`ticket_move` turn an event into a :class:`Move` (the ``expect`` list and
the state change of one conditional write); an event the table lacks for the record's state is
refused with :class:`corral.exceptions.VMStateTransitionError` or
:class:`corral.exceptions.TicketStateTransitionError`. The transition tables
(:data:`VM_TRANSITIONS`, :data:`TICKET_TRANSITIONS`) are derived from the event tables, so the
diagrams in docs/pools.md cannot drift from what the code does.

No other module names a VM or ticket state by its text: they use the enums and the sets below.
This module must not do I/O, read a clock, or import anything but the exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from corral import exceptions


class VMState(StrEnum):
    """Where a VM is in its life (SPEC §5)."""

    SPAWNING = "spawning"
    READY = "ready"
    IN_USE = "in_use"
    RELEASING = "releasing"
    HELD = "held"
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"
    FORGOTTEN = "forgotten"
    """corral stopped tracking it without touching it (an operator's ``forget``, or an external
    VM that retired): the machine may still run. Its record is a tombstone: the leak sweep leaves
    the machine alone."""


class TicketState(StrEnum):
    """Where a ticket is in its life (SPEC §5)."""

    WAITING = "waiting"
    ASSIGNED = "assigned"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


class Effect(StrEnum):
    """What the shell does after a move was written."""

    SUBMIT_TERMINATE = "submit_terminate"
    """Start a termination task for the VM (it is now ``terminating``)."""
    SUBMIT_RELEASE = "submit_release"
    """Start the release-cleanup task of the VM (it is now ``releasing``)."""
    KICK_ASSIGN = "kick_assign"
    """A VM became free or a ticket ended: run the assignment again."""
    KICK_SPAWN = "kick_spawn"
    """The pool's supply changed: plan its preallocation again."""
    FORGET = "forget"
    """The VM is gone for good: drop the shell's bookkeeping of it (retries, livechecks)."""
    WAKE_WAITERS = "wake_waiters"
    """The ticket left ``waiting`` or ended: wake whoever waits for it."""


_VM_ALL: frozenset[VMState] = frozenset(VMState)

ALIVE_VM_STATES: frozenset[VMState] = frozenset(
    {
        VMState.SPAWNING,
        VMState.READY,
        VMState.IN_USE,
        VMState.RELEASING,
        VMState.HELD,
        VMState.TERMINATING,
    }
)
"""States in which the backend may still have the VM (they count against the pool's ``max``)."""

DEAD_VM_STATES: frozenset[VMState] = _VM_ALL - ALIVE_VM_STATES
"""Terminal VM states: the backend cannot have the VM any more."""

IN_FLIGHT_VM_STATES: frozenset[VMState] = frozenset(
    {VMState.SPAWNING, VMState.RELEASING, VMState.TERMINATING}
)
"""States a task drives a VM out of (after a crash, a VM left here with no task is an orphan)."""

PURGED_VM_STATES: frozenset[VMState] = DEAD_VM_STATES - {VMState.FORGOTTEN}
"""Dead states whose records retention may delete: a ``forgotten`` record is kept as the
tombstone that keeps the leak sweep away from a machine corral no longer owns."""

CHECKED_VM_STATES: frozenset[VMState] = frozenset({VMState.READY, VMState.IN_USE})
"""States in which a VM is livechecked."""

OPEN_TICKET_STATES: frozenset[TicketState] = frozenset({TicketState.WAITING, TicketState.ASSIGNED})
"""States of a ticket that still holds, or waits for, a VM."""

ENDED_TICKET_STATES: frozenset[TicketState] = frozenset(TicketState) - OPEN_TICKET_STATES
"""Terminal ticket states."""


class VMEvent(StrEnum):
    """Everything that can happen to a VM."""

    CREATED = "created"
    """Recorded before the backend is asked to create it."""
    HANDLE_KNOWN = "handle_known"
    """The backend created it and gave its handle; it is not up yet."""
    STOP_REQUESTED = "stop_requested"
    """An operator asked to terminate a VM still spawning (the spawn task is stopped)."""
    CAME_UP = "came_up"
    """The backend reports it up with an address."""
    SPAWN_ABANDONED = "spawn_abandoned"
    """The spawn failed, timed out, was rolled back or stopped: terminate what was made."""
    ASSIGNED = "assigned"
    """Given to a ticket (the store's atomic assignment)."""
    FREED_FOR_CLEANUP = "freed_for_cleanup"
    """Its ticket ended and it will be reused: clean it first."""
    FREED_TO_TERMINATE = "freed_to_terminate"
    """Its ticket ended and it will not be reused."""
    CLEANED = "cleaned"
    """The release-cleanup succeeded: back to the pool."""
    CLEANUP_ABANDONED = "cleanup_abandoned"
    """The release-cleanup failed or was interrupted: not reused."""
    HOLD_MARKED = "hold_marked"
    """An operator asked to keep the VM after its ticket (Nodepool's hold): when the ticket ends,
    the VM is held instead of reused or terminated. Also clears the mark."""
    HELD_NOW = "held_now"
    """An operator held a free ready VM: taken out of service at once."""
    FREED_TO_HOLD = "freed_to_hold"
    """Its ticket ended and it was marked to be held: kept for debugging, serving nobody."""
    HOLD_ENDED = "hold_ended"
    """Its hold expired or was released: terminated (a held VM is never reused)."""
    RETIRED = "retired"
    """An idle VM past its age, uses or idle time, beyond ``max``, evicted for a fresh one, or
    dead by its livechecks."""
    TERMINATE_REQUESTED = "terminate_requested"
    """An operator asked to terminate it (one in use fails its ticket first)."""
    ORPHANED = "orphaned"
    """Found after a restart half-way through a change that no task drives any more."""
    LIVECHECK_FAILED = "livecheck_failed"
    """One livecheck failed (the count is kept; the VM retires after ``attempts``)."""
    LIVECHECK_PASSED = "livecheck_passed"
    """A livecheck passed after failures: the count is reset."""
    TERMINATED = "terminated"
    """The backend confirmed its termination."""
    UNDONE = "undone"
    """The rollback of a spawn that never completed confirmed the machine gone."""
    LOST = "lost"
    """The backend does not have it any more although it was never terminated by us."""
    LOST_WHILE_TERMINATING = "lost_while_terminating"
    """The backend does not have a VM we were terminating: the termination is done."""
    REGISTERED = "registered"
    """A machine made elsewhere joined the pool (an operator's ``vm add``), after its first
    livecheck passed: recorded ready and *external* (retiring forgets it, never destroys it)."""
    FORGET_REQUESTED = "forget_requested"
    """An operator asked corral to forget a free VM: marked external and retired in one write
    (its "termination" only forgets it)."""
    FORGET_MARKED = "forget_marked"
    """An operator asked corral to forget a VM in use (``--force``): marked external before its
    ticket is failed, so whatever ends it forgets it rather than destroys it."""
    FORGOTTEN = "forgotten"
    """An external VM's retirement completed without a backend call: it is no longer tracked."""


class TicketEvent(StrEnum):
    """Everything that can happen to a ticket."""

    ASSIGNED = "assigned"
    """A VM was given to it (the store's atomic assignment)."""
    RENEWED = "renewed"
    """Its lease was extended (its owner renewed it, or used it)."""
    CLOSED = "closed"
    """Its owner released its VM."""
    CANCELLED = "cancelled"
    """Its owner gave up waiting."""
    EXPIRED = "expired"
    """Its lease lapsed."""
    FAILED = "failed"
    """Its VM died, was lost or terminated by an operator, or no pool can serve it."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of an event table: from which states, to which state, with what effects."""

    sources: frozenset[str]
    target: str | None
    effects: tuple[Effect, ...] = ()


def _rule(
    sources: frozenset[VMState] | frozenset[TicketState] | set[VMState] | set[TicketState],
    target: VMState | TicketState | None,
    *effects: Effect,
) -> Rule:
    return Rule(
        frozenset(s.value for s in sources), None if target is None else target.value, effects
    )


_S = VMState
_GONE = (Effect.FORGET, Effect.KICK_SPAWN)
_TERMINATE = (Effect.SUBMIT_TERMINATE, Effect.KICK_SPAWN)

VM_RULES: Mapping[VMEvent, Rule] = {
    VMEvent.CREATED: _rule(set(), _S.SPAWNING, Effect.KICK_SPAWN),
    VMEvent.HANDLE_KNOWN: _rule({_S.SPAWNING}, None),
    VMEvent.STOP_REQUESTED: _rule({_S.SPAWNING}, None),
    VMEvent.CAME_UP: _rule({_S.SPAWNING}, _S.READY, Effect.KICK_ASSIGN, Effect.KICK_SPAWN),
    VMEvent.SPAWN_ABANDONED: _rule({_S.SPAWNING}, _S.TERMINATING, Effect.KICK_SPAWN),
    VMEvent.ASSIGNED: _rule({_S.READY}, _S.IN_USE, Effect.KICK_SPAWN),
    VMEvent.FREED_FOR_CLEANUP: _rule({_S.IN_USE}, _S.RELEASING, Effect.SUBMIT_RELEASE),
    VMEvent.FREED_TO_TERMINATE: _rule({_S.IN_USE}, _S.TERMINATING, *_TERMINATE),
    VMEvent.HOLD_MARKED: _rule({_S.IN_USE, _S.HELD}, None),
    VMEvent.HELD_NOW: _rule({_S.READY}, _S.HELD, Effect.KICK_SPAWN),
    VMEvent.FREED_TO_HOLD: _rule({_S.IN_USE}, _S.HELD, Effect.KICK_SPAWN),
    VMEvent.HOLD_ENDED: _rule({_S.HELD}, _S.TERMINATING, *_TERMINATE),
    VMEvent.CLEANED: _rule({_S.RELEASING}, _S.READY, Effect.KICK_ASSIGN, Effect.KICK_SPAWN),
    VMEvent.CLEANUP_ABANDONED: _rule({_S.RELEASING}, _S.TERMINATING, *_TERMINATE),
    VMEvent.RETIRED: _rule({_S.READY}, _S.TERMINATING, *_TERMINATE),
    VMEvent.TERMINATE_REQUESTED: _rule(
        {_S.SPAWNING, _S.READY, _S.RELEASING, _S.HELD}, _S.TERMINATING, *_TERMINATE
    ),
    VMEvent.ORPHANED: _rule(
        {_S.SPAWNING, _S.RELEASING, _S.TERMINATING}, _S.TERMINATING, *_TERMINATE
    ),
    VMEvent.LIVECHECK_FAILED: _rule(CHECKED_VM_STATES, None),
    VMEvent.LIVECHECK_PASSED: _rule(CHECKED_VM_STATES, None),
    VMEvent.TERMINATED: _rule({_S.TERMINATING}, _S.TERMINATED, *_GONE),
    VMEvent.UNDONE: _rule({_S.TERMINATING}, _S.FAILED, *_GONE),
    VMEvent.LOST: _rule(
        {_S.SPAWNING, _S.READY, _S.IN_USE, _S.RELEASING, _S.HELD},
        _S.FAILED,
        *_GONE,
        Effect.KICK_ASSIGN,
    ),
    VMEvent.LOST_WHILE_TERMINATING: _rule({_S.TERMINATING}, _S.TERMINATED, *_GONE),
    VMEvent.REGISTERED: _rule(set(), _S.READY, Effect.KICK_ASSIGN, Effect.KICK_SPAWN),
    VMEvent.FORGET_REQUESTED: _rule({_S.READY, _S.RELEASING, _S.HELD}, _S.TERMINATING, *_TERMINATE),
    VMEvent.FORGET_MARKED: _rule({_S.IN_USE}, None),
    VMEvent.FORGOTTEN: _rule({_S.TERMINATING}, _S.FORGOTTEN, *_GONE),
}
"""The VM event table. ``CREATED`` and ``REGISTERED`` have no sources: they make the record."""

_T = TicketState
_ENDS_HOLD = (Effect.WAKE_WAITERS, Effect.KICK_ASSIGN)

TICKET_RULES: Mapping[TicketEvent, Rule] = {
    TicketEvent.ASSIGNED: _rule({_T.WAITING}, _T.ASSIGNED, Effect.WAKE_WAITERS),
    TicketEvent.RENEWED: _rule(OPEN_TICKET_STATES, None),
    TicketEvent.CLOSED: _rule({_T.ASSIGNED}, _T.CLOSED, *_ENDS_HOLD),
    TicketEvent.CANCELLED: _rule({_T.WAITING}, _T.CANCELLED, *_ENDS_HOLD),
    TicketEvent.EXPIRED: _rule(OPEN_TICKET_STATES, _T.EXPIRED, *_ENDS_HOLD),
    TicketEvent.FAILED: _rule(OPEN_TICKET_STATES, _T.FAILED, *_ENDS_HOLD),
}
"""The ticket event table. A new ticket is inserted ``waiting`` (:data:`TICKET_INITIAL`)."""

VM_INITIAL = VMState.SPAWNING
"""The state a VM is recorded in (by :data:`VMEvent.CREATED`)."""
TICKET_INITIAL = TicketState.WAITING
"""The state a ticket is recorded in."""

VM_FREE_EVENTS: Mapping[VMState, VMEvent] = {
    VMState.RELEASING: VMEvent.FREED_FOR_CLEANUP,
    VMState.TERMINATING: VMEvent.FREED_TO_TERMINATE,
    VMState.HELD: VMEvent.FREED_TO_HOLD,
}
"""When a ticket ends, the event its VM takes for the state it goes to. A VM marked to be held
(its ``hold_until`` set) goes to ``held`` whatever was asked: the store's close applies
:data:`HOLD_WINS` in the same write."""

HOLD_WINS = VMState.HELD
"""The state a VM marked to be held takes when its ticket ends, instead of the one asked."""


def _derive(
    rules: Mapping[VMEvent, Rule] | Mapping[TicketEvent, Rule], states: list[str]
) -> dict[str, frozenset[str]]:
    table: dict[str, set[str]] = {s: set() for s in states}
    for rule in rules.values():
        if rule.target is None:
            continue
        for source in rule.sources:
            if source != rule.target:
                table[source].add(rule.target)
    return {s: frozenset(t) for s, t in table.items()}


VM_TRANSITIONS: Mapping[VMState, frozenset[VMState]] = {
    VMState(s): frozenset(VMState(t) for t in ts)
    for s, ts in _derive(VM_RULES, [s.value for s in VMState]).items()
}
"""Allowed VM moves, derived from :data:`VM_RULES`. ``failed`` means the backend no longer has
the VM although it was never terminated cleanly (a spawn rolled back, or a VM the backend lost);
``terminated`` means the backend confirmed its termination. Both are terminal: a VM is forgotten
only once the backend cannot have it."""

TICKET_TRANSITIONS: Mapping[TicketState, frozenset[TicketState]] = {
    TicketState(s): frozenset(TicketState(t) for t in ts)
    for s, ts in _derive(TICKET_RULES, [s.value for s in TicketState]).items()
}
"""Allowed ticket moves, derived from :data:`TICKET_RULES`."""


@dataclass(frozen=True, slots=True)
class Move:
    """One conditional write: apply when the record's state is in ``expect``; set ``state`` (if
    not ``None``); then carry out ``effects``."""

    event: str
    expect: tuple[str, ...]
    state: str | None
    effects: tuple[Effect, ...]


def _move(
    kind: str,
    rules: Mapping[VMEvent, Rule] | Mapping[TicketEvent, Rule],
    event: VMEvent | TicketEvent,
    current: str | None,
    error: type[exceptions.CorralError],
) -> Move:
    rule = rules[event]  # type: ignore[index]
    expect = rule.sources
    if current is not None:
        if current not in rule.sources:
            raise error(f"a {kind} in state {current} cannot take the event {event}")
        expect = frozenset({current})
    return Move(str(event), tuple(sorted(expect)), rule.target, rule.effects)


def vm_move(event: VMEvent, current: VMState | str | None = None) -> Move:
    """The write for ``event`` on a VM: conditional on the table's sources, or on exactly
    ``current`` when the caller read the VM in that state (refused if the table lacks it)."""
    return _move(
        "VM",
        VM_RULES,
        event,
        None if current is None else str(current),
        exceptions.VMStateTransitionError,
    )


def ticket_move(event: TicketEvent, current: TicketState | str | None = None) -> Move:
    """The write for ``event`` on a ticket (see :func:`vm_move`)."""
    return _move(
        "ticket",
        TICKET_RULES,
        event,
        None if current is None else str(current),
        exceptions.TicketStateTransitionError,
    )


def vm_target(event: VMEvent) -> VMState | None:
    """The state ``event`` moves a VM to (``None``: it stays)."""
    target = VM_RULES[event].target
    return None if target is None else VMState(target)


def ticket_target(event: TicketEvent) -> TicketState | None:
    """The state ``event`` moves a ticket to (``None``: it stays)."""
    target = TICKET_RULES[event].target
    return None if target is None else TicketState(target)


def vm_sources(event: VMEvent) -> tuple[str, ...]:
    """The states a VM may be in for ``event`` to apply, sorted (a store's ``expect``)."""
    return tuple(sorted(VM_RULES[event].sources))


def ticket_sources(event: TicketEvent) -> tuple[str, ...]:
    """The states a ticket may be in for ``event`` to apply, sorted."""
    return tuple(sorted(TICKET_RULES[event].sources))


def ticket_end_event(state: TicketState) -> TicketEvent:
    """The event that ends a ticket in ``state`` (``closed`` → :data:`TicketEvent.CLOSED`)."""
    for event, rule in TICKET_RULES.items():
        if rule.target == state.value:
            return event
    raise exceptions.TicketStateTransitionError(f"no event ends a ticket as {state}")


def effects_into(state: VMState | str) -> tuple[Effect, ...]:
    """The synchronous effects of any move into ``state`` (for a write the store made on its own,
    such as a reconciliation's)."""
    found: list[Effect] = []
    for rule in VM_RULES.values():
        if rule.target == str(state):
            found.extend(e for e in rule.effects if e not in found)
    return tuple(e for e in found if e not in (Effect.SUBMIT_TERMINATE, Effect.SUBMIT_RELEASE))


def values(states: Iterable[VMState] | Iterable[TicketState]) -> list[str]:
    """The text of ``states``, sorted (for store filters, which take plain strings)."""
    return sorted({s.value for s in states})
