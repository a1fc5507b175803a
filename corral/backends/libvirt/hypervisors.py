"""Placement, memory commit and bounded creations over a pool's hypervisors (vdsm's ``memCommit``
and ``_ongoingCreations``, for several hypervisors).

:func:`place` is the pure decision: among the hypervisors where the new VM fits (committed memory
and vCPUs plus the VM's, overhead included, within capacity), the one with the most free memory
(ties: the fewest creations in flight, then the configuration order). :class:`Placement` keeps
the books per hypervisor — what each VM commits, by name — and the bound on creations in flight,
whose waiters queue in order on a semaphore per hypervisor. Nothing here talks to libvirt.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from corral import exceptions
from corral.backends.base import CapacityOptions
from corral.backends.capacity import Demand, check_admission


@dataclass(frozen=True, slots=True)
class Load:
    """One hypervisor as placement sees it."""

    id: str
    capacity: CapacityOptions
    committed: Demand


def place(loads: Sequence[Load], memory_mib: int, vcpus: int) -> str:
    """The id of the hypervisor to put a VM of ``memory_mib`` and ``vcpus`` on.

    Raises ``CapacityExceeded`` naming every hypervisor's reason when it fits nowhere.
    """
    best: tuple[int, int] | None = None
    chosen = ""
    reasons = []
    for position, load in enumerate(loads):
        demand = Demand(memory_mib + load.capacity.overhead_mib, vcpus)
        try:
            check_admission(load.capacity, load.committed, demand)
        except exceptions.CapacityExceeded as exc:
            reasons.append(f"{load.id}: {exc.message}")
            continue
        free = load.capacity.memory_mib - load.committed.memory_mib
        key = (free, -position)
        if best is None or key > best:
            best, chosen = key, load.id
    if best is None:
        raise exceptions.CapacityExceeded("no hypervisor has room: " + "; ".join(reasons))
    return chosen


class Placement:
    """The books of one pool's hypervisors: committed resources per VM, creations in flight.

    Not thread-safe: use it from the event loop only.
    """

    def __init__(self, capacities: dict[str, CapacityOptions], max_creations: dict[str, int]):
        """Start with nothing committed; ``capacities`` and ``max_creations`` are per id."""
        self.capacities = dict(capacities)
        self.max_creations = dict(max_creations)
        self._vms: dict[str, tuple[str, Demand]] = {}
        self._committed: dict[str, Demand] = {hid: Demand(0, 0) for hid in capacities}
        self._creating: dict[str, int] = {hid: 0 for hid in capacities}
        self._slots = {hid: asyncio.Semaphore(max_creations[hid]) for hid in capacities}

    def loads(self) -> list[Load]:
        """Every hypervisor's capacity and commitment, in configuration order."""
        return [Load(hid, cap, self._committed[hid]) for hid, cap in self.capacities.items()]

    def committed(self, hypervisor: str) -> Demand:
        """What the pool's VMs commit on ``hypervisor``."""
        return self._committed[hypervisor]

    def creating(self, hypervisor: str) -> int:
        """Creations in flight on ``hypervisor``."""
        return self._creating[hypervisor]

    def where(self, vm: str) -> str | None:
        """The hypervisor ``vm`` is committed on, if any."""
        entry = self._vms.get(vm)
        return entry[0] if entry is not None else None

    def admit(self, vm: str, memory_mib: int, vcpus: int) -> str:
        """Choose a hypervisor for ``vm`` and commit its resources there; a VM already committed
        stays where it is (a retried spawn). ``CapacityExceeded`` changes nothing."""
        if vm in self._vms:
            return self._vms[vm][0]
        hid = place(self.loads(), memory_mib, vcpus)
        self.commit(vm, hid, memory_mib, vcpus)
        return hid

    def commit(self, vm: str, hypervisor: str, memory_mib: int, vcpus: int) -> None:
        """Record ``vm`` on ``hypervisor`` without a check (a VM found there after a restart)."""
        if vm in self._vms:
            return
        demand = Demand(memory_mib + self.capacities[hypervisor].overhead_mib, vcpus)
        self._vms[vm] = (hypervisor, demand)
        self._committed[hypervisor] = self._committed[hypervisor] + demand

    def release(self, vm: str) -> None:
        """Give back ``vm``'s resources; an unknown VM changes nothing."""
        entry = self._vms.pop(vm, None)
        if entry is not None:
            hid, demand = entry
            self._committed[hid] = self._committed[hid] - demand

    @asynccontextmanager
    async def creating_on(self, hypervisor: str) -> AsyncIterator[None]:
        """Hold one of ``hypervisor``'s creation slots for the block (waiting in order for one)."""
        async with self._slots[hypervisor]:  # asyncio's semaphore serves waiters in order
            self._creating[hypervisor] += 1
            try:
                yield
            finally:
                self._creating[hypervisor] -= 1
