"""The frozen values the store hands out (``VM``, ``Ticket``, ``PoolStatus``) and the lifecycle
diagrams.

The states and the tables of allowed moves live in :mod:`corral.pools.lifecycle` (re-exported
here); ``with_state`` refuses a move that table lacks. It must not do I/O, read a
clock or know about the store, the backends or asyncio; times are passed in as floats.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from corral import exceptions
from corral.pools.lifecycle import (
    ALIVE_VM_STATES,
    OPEN_TICKET_STATES,
    TICKET_TRANSITIONS,
    VM_TRANSITIONS,
    TicketState,
    VMState,
)
from corral.types import JSON

__all__ = [
    "ALIVE_VM_STATES",
    "OPEN_TICKET_STATES",
    "TICKET_TRANSITIONS",
    "VM",
    "VM_TRANSITIONS",
    "PoolStats",
    "PoolStatus",
    "Ticket",
    "TicketState",
    "VMState",
    "check_ticket_transition",
    "check_vm_transition",
    "lifecycle_diagrams",
    "state_diagram",
]

_S = TypeVar("_S", VMState, TicketState)


def _check(table: Mapping[_S, frozenset[_S]], current: _S, target: _S) -> bool:
    return target in table[current]


def check_vm_transition(current: VMState, target: VMState) -> VMState:
    """Return ``target`` if a VM may move there from ``current``; raise otherwise."""
    if not _check(VM_TRANSITIONS, current, target):
        raise exceptions.VMStateTransitionError(f"a VM cannot move from {current} to {target}")
    return target


def check_ticket_transition(current: TicketState, target: TicketState) -> TicketState:
    """Return ``target`` if a ticket may move there from ``current``; raise otherwise."""
    if not _check(TICKET_TRANSITIONS, current, target):
        raise exceptions.TicketStateTransitionError(
            f"a ticket cannot move from {current} to {target}"
        )
    return target


@dataclass(frozen=True, slots=True)
class VM:
    """One machine of a pool, as the store records it.

    ``sandbox`` is the sandbox of the last ticket the VM served (``None`` while it is fresh);
    ``handle`` is the backend's handle as JSON text (``None`` until the backend made the VM).
    """

    name: str
    pool: str
    state: VMState
    created_at: float
    state_since: float
    id_in_pool: int = 0
    address: str | None = None
    handle: str | None = None
    ticket: str | None = None
    sandbox: str | None = None
    uses: int = 0
    ready_at: float | None = None
    last_used_at: float | None = None
    livecheck_failures: int = 0
    last_livecheck_at: float | None = None
    reason: str | None = None
    hold_until: float | None = None
    """While an operator holds the VM (or will hold it once its ticket ends): until when."""
    machine_state: str | None = None
    """The backend's own state of the machine (libvirt's ``Up``, ``Paused``, ...), beside the
    pool state; ``None`` when the backend tracks none."""
    external: bool = False
    """Made elsewhere and registered (``corral vm add``), or being forgotten: corral never
    destroys it; when it retires it is forgotten."""
    load: int = 0
    """How many tickets hold the VM now (at most its pool's ``slots``; 0 while it is free)."""
    exclusive: bool = False
    """True while an exclusive ticket holds it (it then shares with none)."""
    tickets: tuple[str, ...] = ()
    """Every ticket holding it (``ticket`` is the first of them)."""

    @property
    def alive(self) -> bool:
        """True while the backend may still have this VM."""
        return self.state in ALIVE_VM_STATES

    @property
    def fresh(self) -> bool:
        """True while the VM has never served a ticket."""
        return self.uses == 0

    def with_state(self, state: VMState, now: float, **changes: object) -> VM:
        """A copy moved to ``state`` (checked against the table) with other fields changed."""
        check_vm_transition(self.state, state)
        return dataclasses.replace(self, state=state, state_since=now, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Request:
    """One entry of a multi-machine ticket's list: ``count`` machines of ``pool`` (or of any pool
    whose tags include ``tags``)."""

    pool: str | None = None
    tags: tuple[str, ...] = ()
    count: int = 1


@dataclass(frozen=True, slots=True)
class Ticket:
    """A request for one VM (SPEC §5). ``seq`` orders tickets by age within a priority."""

    id: str
    owner: str
    state: TicketState
    created_at: float
    expires_at: float | None
    pool: str | None = None
    tags: tuple[str, ...] = ()
    sandbox: str | None = None
    priority: int = 0
    ttl: float | None = None
    seq: int = 0
    vm: str | None = None
    assigned_at: float | None = None
    closed_at: float | None = None
    reason: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)
    """Small key/value metadata given at creation (a build's task id, chroot, ...)."""
    exclusive: bool = False
    """The ticket wants whole machines: it shares none of them with another ticket."""
    count: int = 1
    """How many machines the ticket wants, assigned together or not at all."""
    vms: tuple[str, ...] = ()
    """Every VM assigned to it (``vm`` is the first of them)."""
    requests: tuple[Request, ...] = ()
    """A list ticket's entries (``pool`` and ``tags`` are then empty and ``count`` is their
    total); empty for a ticket of one pool or tag set. ``vms`` follow its order."""

    @property
    def parts(self) -> tuple[Request, ...]:
        """What the ticket asks for, as a list: its ``requests``, or its one pool/tags/count."""
        return self.requests or (Request(self.pool, self.tags, self.count),)

    @property
    def open(self) -> bool:
        """True while the ticket holds or waits for a VM."""
        return self.state in OPEN_TICKET_STATES

    def with_state(self, state: TicketState, **changes: object) -> Ticket:
        """A copy moved to ``state`` (checked against the table) with other fields changed."""
        check_ticket_transition(self.state, state)
        return dataclasses.replace(self, state=state, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PoolStats:
    """Per-pool statistics over the recent samples (times in seconds, ``None`` without samples)."""

    spawn_p50: float | None = None
    spawn_p95: float | None = None
    spawn_attempts: int = 0
    spawn_failures: int = 0
    spawn_success_rate: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    terminate_failures: int = 0
    livecheck_failures: int = 0
    wasted_spawns: int = 0
    """VMs spawned and then terminated without ever serving a ticket."""
    recent_spawns: int = 0
    """How many of the latest spawns the two figures below count."""
    recent_spawn_failures: int = 0
    last_spawn_error: str | None = None
    """Why the latest failed spawn failed (stderr tail, the backend's error, a timeout)."""


@dataclass(frozen=True, slots=True)
class PoolStatus:
    """A pool's configuration limits, its VMs counted per state, its queue and its statistics."""

    name: str
    backend: str
    tags: tuple[str, ...]
    max: int
    max_starting: int
    min_ready: int
    vms: Mapping[str, int] = field(default_factory=dict)
    waiting_tickets: int = 0
    assigned_tickets: int = 0
    stats: PoolStats = field(default_factory=PoolStats)
    info: Mapping[str, JSON] = field(default_factory=dict)
    problem: str | None = None
    """Why the pool is unhealthy (its recent spawns fail), or ``None``."""
    description: str | None = None
    """What the pool is for (its config's ``description``)."""
    mode: str = "active"
    """``active``, ``paused`` or ``draining`` (set by operators)."""

    def count(self, state: VMState) -> int:
        """How many VMs of this pool are in ``state``."""
        return self.vms.get(state.value, 0)


def state_diagram(table: Mapping[_S, frozenset[_S]], initial: _S) -> str:
    """A Mermaid ``stateDiagram-v2`` of a transition table (docs/pools.md embeds these)."""
    lines = ["stateDiagram-v2", f"    [*] --> {initial.value}"]
    for source in table:
        targets = table[source]
        if not targets:
            lines.append(f"    {source.value} --> [*]")
        for target in sorted(targets, key=lambda s: list(table).index(s)):
            lines.append(f"    {source.value} --> {target.value}")
    return "\n".join(lines)


def lifecycle_diagrams() -> dict[str, str]:
    """The VM and ticket diagrams, keyed by the marker docs/pools.md uses for each."""
    return {
        "vm-lifecycle": state_diagram(VM_TRANSITIONS, VMState.SPAWNING),
        "ticket-lifecycle": state_diagram(TICKET_TRANSITIONS, TicketState.WAITING),
    }


def event_tables() -> dict[str, str]:
    """The VM and ticket event tables as Markdown, keyed by the marker docs/pools.md uses."""
    from corral.pools.lifecycle import TICKET_RULES, VM_RULES, Rule, TicketEvent, VMEvent

    def table(rules: Mapping[VMEvent, Rule] | Mapping[TicketEvent, Rule]) -> str:
        lines = ["| event | from | to | then |", "|---|---|---|---|"]
        for event, rule in rules.items():
            sources = ", ".join(f"`{s}`" for s in sorted(rule.sources)) or "(new)"
            target = "(unchanged)" if rule.target is None else f"`{rule.target}`"
            effects = ", ".join(str(e) for e in rule.effects) or "-"
            lines.append(f"| `{event}` | {sources} | {target} | {effects} |")
        return "\n".join(lines)

    return {"vm-events": table(VM_RULES), "ticket-events": table(TICKET_RULES)}
