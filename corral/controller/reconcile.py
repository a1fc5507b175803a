"""Reconciliation on start: the store's VMs against every backend's ``list()`` (SPEC §6).

:func:`plan` is pure: given the store's VMs of a pool, the handles the backend listed and the VMs
that an unfinished task is still working on, it says which machines to sweep (the backend has them,
the store does not know them alive: a leak), which VMs the backend lost, and which orphaned VMs (no
task, stuck half-way after a crash) to terminate. :func:`orphans` says the same for a backend that
cannot list. This module must not call backends or the store; the controller acts on the plan.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from dataclasses import dataclass

from corral.backends.base import Handle
from corral.pools.model import VM, VMState


@dataclass(frozen=True, slots=True)
class ReconcilePlan:
    """What to do about one pool after a restart."""

    sweep: tuple[Handle, ...] = ()
    """Machines the backend has that the store does not know alive: terminate them."""
    lost: tuple[VM, ...] = ()
    """VMs the store has alive that the backend does not have: mark them failed, replace them."""
    orphans: tuple[VM, ...] = ()
    """VMs stuck in spawning/releasing/terminating with no task: terminate them."""


_IN_FLIGHT = (VMState.SPAWNING, VMState.RELEASING, VMState.TERMINATING)


def orphans(vms: Iterable[VM], busy: Set[str]) -> tuple[VM, ...]:
    """VMs half-way through a change that no task is driving any more."""
    return tuple(v for v in vms if v.state in _IN_FLIGHT and v.name not in busy)


def plan(vms: Iterable[VM], listed: Iterable[Handle], busy: Set[str]) -> ReconcilePlan:
    """Compare the store with the backend's inventory of one pool."""
    known = list(vms)
    alive = {v.name: v for v in known if v.alive}
    have = {h.name: h for h in listed}
    sweep = tuple(h for name, h in sorted(have.items()) if name not in alive and name not in busy)
    lost = tuple(
        v
        for name, v in sorted(alive.items())
        if name not in have and name not in busy and v.state is not VMState.SPAWNING
    )
    lost_names = {v.name for v in lost}
    stuck = tuple(v for v in orphans(known, busy) if v.name not in lost_names)
    return ReconcilePlan(sweep=sweep, lost=lost, orphans=stuck)
