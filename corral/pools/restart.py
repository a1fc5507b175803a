"""The restart rules: what reconciliation does to each machine after a restart (SPEC §6, §10).

When the controller starts, the task engine has recovered the unfinished tasks (SPEC §4) and the
previous incarnation's leftover commands are dead (``corral.backends.leftovers``). Then every VM
the store has and every machine the backend lists is put in a :class:`Situation` — what the store
knows of its name, whether the backend lists it, whether a recovered task drives it, whether the
operator said ``--adopt`` — and :data:`RULES` gives the one :class:`Action` for it. Nothing else
decides: ``corral.controller.reconcile`` classifies, looks up and groups; the shell acts.

What the store knows of a name (:class:`Record`) is its VM's state, or, without a row, whether the
store ever *issued* that name. A VM's row (with its name, from the pool's counter) is committed
before the backend is asked to create it, so every machine this store created has a name it
issued; a listed machine whose name it never issued (a fresh store, a mistyped store path, another
installation's machines) was not created by this store and is only reported, never terminated,
unless the operator adopts it.

The table in docs/backends.md is generated from :data:`RULES` by :func:`markdown` (a test checks it
is current). This module must not do I/O, read a clock, or import anything but the VM lifecycle.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

from corral.pools.lifecycle import ALIVE_VM_STATES, IN_FLIGHT_VM_STATES, VMState


class Unrecorded(StrEnum):
    """What the store knows of a machine's name when it has no row for it."""

    PURGED = "purged"
    """The store issued the name (its row was deleted or purged since). Not to be confused with
    a ``forgotten`` VM, whose record stays as a tombstone."""
    FOREIGN = "foreign"
    """The store never issued the name: not a machine this store created."""


Record = VMState | Unrecorded
"""What the store knows of a name: its VM's state, or why it has no row."""

RECORDS: tuple[Record, ...] = (*VMState, *Unrecorded)
"""Every value of :data:`Record`."""


class Inventory(StrEnum):
    """What the backend's ``list()`` says of the machine."""

    LISTED = "listed"
    UNLISTED = "unlisted"
    UNKNOWN = "unknown"
    """The backend cannot list (no ``list`` capability) or its listing failed."""


class Action(StrEnum):
    """What reconciliation does to one machine."""

    KEEP = "keep"
    """Nothing: the store and the backend agree (or nothing is known to act on)."""
    LEAVE = "leave"
    """A recovered task drives the VM; its recovery (SPEC §4) decides, reconciliation does not."""
    SWEEP = "sweep"
    """A leak: the backend has a machine the store issued but does not hold alive. Terminate it."""
    REPORT = "report"
    """A foreign machine: log it and touch nothing (``--adopt`` sweeps it)."""
    LOST = "lost"
    """The backend lost the VM: mark it ``failed`` (and its ticket, if it had one)."""
    GONE = "gone"
    """A ``terminating`` VM the backend no longer has: its termination happened; ``terminated``."""
    TERMINATE = "terminate"
    """An orphan half-way through a change with no task: move it to ``terminating`` and terminate
    it again (terminations are idempotent)."""


@dataclass(frozen=True, slots=True)
class Situation:
    """One machine after a restart: one cell of :data:`RULES`."""

    record: Record
    inventory: Inventory
    task: bool
    """An unfinished (recovered) task of this controller works on the VM."""
    adopt: bool
    """The operator started the controller with ``--adopt``."""


def _rule(s: Situation) -> Action:
    """The rules in words; :data:`RULES` is this function tabulated over every cell."""
    if s.task:
        return Action.LEAVE
    if s.record is VMState.FORGOTTEN:
        # a tombstone: corral let go of this machine on purpose and must never touch it again
        return Action.KEEP
    if isinstance(s.record, Unrecorded) or s.record not in ALIVE_VM_STATES:
        if s.inventory is not Inventory.LISTED:
            return Action.KEEP
        if s.record is Unrecorded.FOREIGN and not s.adopt:
            return Action.REPORT
        return Action.SWEEP
    if s.record is VMState.SPAWNING:
        # a backend's listing may lag behind its own creations: "unlisted" proves nothing
        return Action.TERMINATE
    if s.inventory is Inventory.UNLISTED:
        return Action.GONE if s.record is VMState.TERMINATING else Action.LOST
    if s.record in IN_FLIGHT_VM_STATES:
        return Action.TERMINATE
    return Action.KEEP  # ready or in use; an unlistable backend's dead VMs fail their livechecks


def situations() -> Iterator[Situation]:
    """Every cell of the table, in the order of :func:`markdown`."""
    for record, inventory, task, adopt in itertools.product(
        RECORDS, Inventory, (False, True), (False, True)
    ):
        yield Situation(record, inventory, task, adopt)


RULES: Mapping[Situation, Action] = MappingProxyType({s: _rule(s) for s in situations()})
"""The action for every situation (every combination of the four dimensions)."""


def decide(situation: Situation) -> Action:
    """The action the table gives for ``situation``."""
    return RULES[situation]


def classify(name: str, pool: str, state: VMState | None, issued: int) -> Record:
    """What the store knows of machine ``name`` of ``pool``: its VM's ``state`` when it has a
    row, else whether its counter issued the name (``issued``: how many names it has issued;
    names are ``<pool>-<n>``, see ``PoolsRepository.create_vm``)."""
    if state is not None:
        return state
    found = re.fullmatch(rf"{re.escape(pool)}-(\d+)", name)
    if found is not None and 0 < (n := int(found.group(1))) <= issued and name == vm_name(pool, n):
        return Unrecorded.PURGED
    return Unrecorded.FOREIGN


def vm_name(pool: str, n: int) -> str:
    """The name of the ``n``-th VM recorded for ``pool`` (as ``PoolsRepository.create_vm``
    gives it)."""
    return f"{pool}-{n:06d}"


def markdown() -> str:
    """The table for docs/backends.md: one row per record and inventory, the task and adopt
    dimensions folded into the cells where they change nothing."""
    lines = [
        "| store's record | backend | no task | no task, `--adopt` | a recovered task |",
        "|---|---|---|---|---|",
    ]
    for record, inventory in itertools.product(RECORDS, Inventory):

        def cell(task: bool, adopt: bool, r: Record = record, i: Inventory = inventory) -> str:
            return RULES[Situation(r, i, task, adopt)].value

        with_task = {cell(True, False), cell(True, True)}
        lines.append(
            f"| {record.value} | {inventory.value} | {cell(False, False)} | "
            f"{cell(False, True)} | {' / '.join(sorted(with_task))} |"
        )
    return "\n".join(lines)
