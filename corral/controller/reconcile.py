"""Reconciliation on start: the store's VMs against every backend's ``list()`` (SPEC §6).

:func:`plan` is pure: given the store's VMs of a pool, the handles the backend listed (``None``
when it cannot list), the VMs an unfinished task is still working on, how many names the pool's
counter has issued and whether the operator adopts foreign machines, it puts every machine in a
:class:`corral.pools.restart.Situation`, looks its action up in the restart rules and groups the
machines by action. This module must not decide anything the rules table decides, nor call
backends or the store; the controller acts on the plan (:mod:`corral.controller.recovery`).
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from corral.backends.base import Handle
from corral.pools import restart
from corral.pools.model import VM


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """What to do about one pool after a restart (one field per acting rule)."""

    sweep: tuple[Handle, ...] = ()
    """Machines the backend has whose name the store issued but does not hold alive: terminate."""
    foreign: tuple[Handle, ...] = ()
    """Machines whose name the store never issued: report them, touch nothing (no ``adopt``)."""
    lost: tuple[VM, ...] = ()
    """VMs the store has alive that the backend does not have: mark them failed, replace them."""
    gone: tuple[VM, ...] = ()
    """VMs ``terminating`` that the backend no longer has: their termination happened."""
    orphans: tuple[VM, ...] = ()
    """VMs stuck in spawning/releasing/terminating with no task: terminate them."""


def plan(
    pool: str,
    vms: Iterable[VM],
    listed: Iterable[Handle] | None,
    busy: Set[str],
    *,
    issued: int,
    adopt: bool = False,
) -> ReconcilePlan:
    """Compare the store with the backend's inventory of one pool (``listed`` ``None``: the
    backend cannot list)."""
    rows = {v.name: v for v in vms}
    have = {h.name: h for h in listed} if listed is not None else {}
    acts: dict[restart.Action, list[str]] = {action: [] for action in restart.Action}
    for name in sorted(rows.keys() | have.keys()):
        vm = rows.get(name)
        if listed is None or (vm is not None and vm.external and vm.alive):
            # a backend's list() says nothing of a machine it did not make (a registered one)
            inventory = restart.Inventory.UNKNOWN
        else:
            inventory = restart.Inventory.LISTED if name in have else restart.Inventory.UNLISTED
        record = restart.classify(name, pool, None if vm is None else vm.state, issued)
        situation = restart.Situation(record, inventory, task=name in busy, adopt=adopt)
        acts[restart.decide(situation)].append(name)

    def machines(action: restart.Action) -> tuple[Handle, ...]:
        return tuple(have[n] for n in acts[action])

    def records(action: restart.Action) -> tuple[VM, ...]:
        return tuple(rows[n] for n in acts[action])

    return ReconcilePlan(
        sweep=machines(restart.Action.SWEEP),
        foreign=machines(restart.Action.REPORT),
        lost=records(restart.Action.LOST),
        gone=records(restart.Action.GONE),
        orphans=records(restart.Action.TERMINATE),
    )
