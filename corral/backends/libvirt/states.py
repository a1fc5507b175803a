"""vdsm's named VM states, driven by libvirt's lifecycle events (pure: a table and a tiny engine).

vdsm showed a VM as ``WaitForLaunch``, ``Powering up``, ``Up``, ``Paused``, ``Powering down`` or
``Down``. Here those names follow libvirt's domain lifecycle events (the integer codes of
``VIR_DOMAIN_EVENT_*``, repeated below so this module does not import libvirt) plus one event of
corral's own, ``GUEST_READY``, when the guest reported ready with its address: a started domain is
``Powering up`` until then, and ``Up`` after. ``Down`` is final, as in vdsm (its
``DoubleDownError``); a later event for a Down VM changes nothing.

Every change goes through :data:`TRANSITIONS`; an event with no entry leaves the state as it is.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class VmState(StrEnum):
    """vdsm's names for a VM's state on its hypervisor."""

    WAIT_FOR_LAUNCH = "WaitForLaunch"
    POWERING_UP = "Powering up"
    UP = "Up"
    PAUSED = "Paused"
    POWERING_DOWN = "Powering down"
    DOWN = "Down"


class Event(IntEnum):
    """libvirt's ``VIR_DOMAIN_EVENT_*`` lifecycle event codes, plus corral's ``GUEST_READY``."""

    DEFINED = 0
    UNDEFINED = 1
    STARTED = 2
    SUSPENDED = 3
    RESUMED = 4
    STOPPED = 5
    SHUTDOWN = 6
    PMSUSPENDED = 7
    CRASHED = 8
    GUEST_READY = 100


S, E = VmState, Event
_RUNNING = (S.POWERING_UP, S.UP, S.PAUSED, S.POWERING_DOWN)

TRANSITIONS: dict[tuple[VmState, Event], VmState] = {
    (S.WAIT_FOR_LAUNCH, E.STARTED): S.POWERING_UP,
    (S.WAIT_FOR_LAUNCH, E.GUEST_READY): S.UP,  # a guest ready before its start event arrived
    (S.WAIT_FOR_LAUNCH, E.UNDEFINED): S.DOWN,
    (S.POWERING_UP, E.GUEST_READY): S.UP,
    (S.POWERING_UP, E.SUSPENDED): S.PAUSED,
    (S.UP, E.SUSPENDED): S.PAUSED,
    (S.UP, E.PMSUSPENDED): S.PAUSED,
    (S.PAUSED, E.GUEST_READY): S.PAUSED,
    (S.POWERING_DOWN, E.SUSPENDED): S.PAUSED,
    **{(state, E.SHUTDOWN): S.POWERING_DOWN for state in _RUNNING},
    **{(state, E.STOPPED): S.DOWN for state in (S.WAIT_FOR_LAUNCH, *_RUNNING)},
    **{(state, E.CRASHED): S.DOWN for state in (S.WAIT_FOR_LAUNCH, *_RUNNING)},
    **{(state, E.UNDEFINED): S.DOWN for state in _RUNNING},
}
"""``(state, event) -> next state``; pairs not listed leave the state unchanged."""


def resumed_state(ready: bool) -> VmState:
    """Where ``RESUMED`` leads: ``Up`` if the guest had reported ready, else ``Powering up``."""
    return S.UP if ready else S.POWERING_UP


def next_state(state: VmState, event: Event, *, ready: bool = False) -> VmState:
    """The state after ``event``; ``ready`` says whether the guest has reported ready before."""
    if state is S.DOWN:
        return S.DOWN
    if event is E.RESUMED and state in (S.PAUSED, S.POWERING_UP, S.WAIT_FOR_LAUNCH):
        return resumed_state(ready)
    return TRANSITIONS.get((state, event), state)


DOMAIN_STATES: dict[int, VmState] = {
    0: S.WAIT_FOR_LAUNCH,  # VIR_DOMAIN_NOSTATE
    1: S.POWERING_UP,  # RUNNING (Up once the guest reported ready)
    2: S.POWERING_UP,  # BLOCKED
    3: S.PAUSED,  # PAUSED
    4: S.POWERING_DOWN,  # SHUTDOWN (being shut down)
    5: S.DOWN,  # SHUTOFF
    6: S.DOWN,  # CRASHED
    7: S.PAUSED,  # PMSUSPENDED
}
"""``virDomain.state()`` codes as named states: the starting point after a restart."""


def from_domain_state(code: int, *, ready: bool = False) -> VmState:
    """The named state of a domain libvirt reports in state ``code`` (unknown codes: Down)."""
    state = DOMAIN_STATES.get(code, S.DOWN)
    if state is S.POWERING_UP and ready:
        return S.UP
    return state


TABLE_EVENTS: tuple[Event, ...] = (
    E.STARTED,
    E.GUEST_READY,
    E.SUSPENDED,
    E.RESUMED,
    E.SHUTDOWN,
    E.STOPPED,
    E.CRASHED,
    E.UNDEFINED,
)
"""The events shown in the documentation's table (DEFINED and PMSUSPENDED behave as listed in
:data:`TRANSITIONS` and are left out to keep it readable)."""


def _cell(state: VmState, event: Event) -> str:
    before, after = next_state(state, event, ready=False), next_state(state, event, ready=True)
    if before == after:
        return "" if before is state else before.value
    return f"{after.value} if ready, else {before.value}"


def markdown_table() -> str:
    """The transition table as Markdown, for docs/libvirt.md (a test keeps the two equal)."""
    header = "| from \\ event | " + " | ".join(e.name.lower() for e in TABLE_EVENTS) + " |"
    lines = [header, "|---" * (len(TABLE_EVENTS) + 1) + "|"]
    for state in VmState:
        cells = " | ".join(_cell(state, event) for event in TABLE_EVENTS)
        lines.append(f"| {state.value} | {cells} |")
    return "\n".join(lines)
