"""Host capacity admission (SPEC §6, vdsm's memory commit): may one more VM be spawned here?

The decision is a pure function of the declared capacity, what is already committed and what the new
VM asks for; :class:`CapacityLedger` is the small bookkeeping object the guard keeps per backend
(commit on spawn, release on terminate). Nothing here does I/O or knows about time.

:class:`Admission` is the one seam through which the guard admits every spawn: a host capacity
(:class:`LedgerAdmission` around the ledger) or a backend's own admission (the cloud backends'
quotas, :mod:`corral.backends.cloud.quota`, which may ask the cloud or PostgreSQL: hence async).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass

from corral import exceptions
from corral.backends.base import CapacityOptions, VMSpec


@dataclass(frozen=True, slots=True)
class Demand:
    """The resources one VM commits on its host."""

    memory_mib: int
    vcpus: int

    def __add__(self, other: Demand) -> Demand:
        return Demand(self.memory_mib + other.memory_mib, self.vcpus + other.vcpus)

    def __sub__(self, other: Demand) -> Demand:
        return Demand(self.memory_mib - other.memory_mib, self.vcpus - other.vcpus)


ZERO = Demand(0, 0)


def _positive_int(template: Mapping[str, object], key: str) -> int:
    value = template.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise exceptions.ConfigError(
            f"template.{key} must be a positive integer when the backend declares a capacity "
            f"(got {value!r})"
        )
    return value


def demand_of(template: Mapping[str, object], capacity: CapacityOptions) -> Demand:
    """What a VM built from ``template`` commits: its memory plus the per-VM overhead, its vCPUs."""
    memory = _positive_int(template, "memory_mib")
    vcpus = _positive_int(template, "vcpus")
    return Demand(memory + capacity.overhead_mib, vcpus)


def check_admission(capacity: CapacityOptions, committed: Demand, new: Demand) -> None:
    """Raise ``CapacityExceeded`` unless ``committed + new`` fits in ``capacity``.

    ``new`` already includes the per-VM overhead (see :func:`demand_of`).
    """
    total = committed + new
    if total.memory_mib > capacity.memory_mib:
        raise exceptions.CapacityExceeded(
            f"memory: {committed.memory_mib} MiB committed + {new.memory_mib} MiB requested "
            f"(overhead included) > {capacity.memory_mib} MiB capacity"
        )
    if total.vcpus > capacity.vcpus:
        raise exceptions.CapacityExceeded(
            f"vcpus: {committed.vcpus} committed + {new.vcpus} requested > {capacity.vcpus}"
        )


class CapacityLedger:
    """The VMs committed on one backend's host, by name. Not thread-safe: use from one loop."""

    def __init__(self, capacity: CapacityOptions) -> None:
        """Start empty with the declared ``capacity``."""
        self.capacity = capacity
        self._by_name: dict[str, Demand] = {}
        self._committed = ZERO

    @property
    def committed(self) -> Demand:
        """The resources currently committed."""
        return self._committed

    @property
    def free(self) -> Demand:
        """The resources still available (may be negative after :meth:`recommit`)."""
        return Demand(self.capacity.memory_mib, self.capacity.vcpus) - self._committed

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def admit(self, name: str, template: Mapping[str, object]) -> Demand:
        """Commit a new VM's resources, or raise ``CapacityExceeded`` and change nothing.

        Admitting a name that is already committed changes nothing (a retried spawn).
        """
        if name in self._by_name:
            return self._by_name[name]
        demand = demand_of(template, self.capacity)
        check_admission(self.capacity, self._committed, demand)
        self._by_name[name] = demand
        self._committed = self._committed + demand
        return demand

    def recommit(self, name: str, template: Mapping[str, object]) -> Demand:
        """Record a VM that already exists (after a restart) without an admission check."""
        if name in self._by_name:
            return self._by_name[name]
        demand = demand_of(template, self.capacity)
        self._by_name[name] = demand
        self._committed = self._committed + demand
        return demand

    def release(self, name: str) -> None:
        """Give back a VM's resources; releasing an unknown name does nothing."""
        demand = self._by_name.pop(name, None)
        if demand is not None:
            self._committed = self._committed - demand


class Admission(ABC):
    """What the guard admits every spawn against, and gives back on every confirmed terminate.

    Implementations: :class:`LedgerAdmission` (a host's declared capacity) and the cloud
    backends' quotas. A refusal raises ``CapacityExceeded`` and commits nothing.
    """

    @abstractmethod
    async def admit(self, spec: VMSpec) -> None:
        """Commit the VM's resources or raise ``CapacityExceeded`` (a repeat commits nothing)."""

    @abstractmethod
    async def release(self, name: str) -> None:
        """Give back VM ``name``'s resources (unknown names: nothing)."""

    @abstractmethod
    def recommit(self, spec: VMSpec) -> None:
        """Count a VM that already exists (after a restart), without an admission check."""


class LedgerAdmission(Admission):
    """Admission against a :class:`CapacityLedger` (the host capacity option)."""

    def __init__(self, ledger: CapacityLedger) -> None:
        """Admit against ``ledger``."""
        self.ledger = ledger

    async def admit(self, spec: VMSpec) -> None:
        """See :meth:`CapacityLedger.admit`."""
        self.ledger.admit(spec.name, spec.template)

    async def release(self, name: str) -> None:
        """See :meth:`CapacityLedger.release`."""
        self.ledger.release(name)

    def recommit(self, spec: VMSpec) -> None:
        """See :meth:`CapacityLedger.recommit`."""
        self.ledger.recommit(spec.name, spec.template)
