"""Quotas of a cloud pool or account (issue 13): instances, vCPUs, memory that admission respects.

A cloud has no host whose memory corral could commit; it has quotas (AWS's vCPU limits per
instance family, an OpenStack project's instances, cores and RAM). A pool declares them with
``quota: {instances, vcpus, memory_mib, scope}``; ``scope: account`` shares them with every pool
naming the same account. The guard admits every spawn through the backend's
:class:`QuotaAdmission` (the same seam, :class:`corral.backends.capacity.Admission`, through which
a host's capacity is admitted): a spawn that would exceed a limit raises ``CapacityExceeded``
before any API call, and a confirmed terminate gives its share back.

One VM's size comes from the cloud (the ``sizer``: EC2's DescribeInstanceTypes, libcloud's
sizes), fetched once, or from ``vm_vcpus`` / ``vm_memory_mib`` when the cloud cannot tell.
The ledger lives in this process (:class:`QuotaLedger`, one per scope key), or, when the store is
PostgreSQL, in the database for the whole cluster (:mod:`corral.backends.cloud.shared`).

:func:`check_quota` and :class:`QuotaLedger` are pure: no I/O, no clock.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import pydantic

from corral import exceptions
from corral.backends.base import VMSpec
from corral.backends.capacity import Admission


class QuotaOptions(pydantic.BaseModel):
    """The ``quota`` option of a cloud backend."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    instances: int | None = pydantic.Field(None, ge=1, description="instances at once")
    vcpus: int | None = pydantic.Field(None, ge=1, description="vCPUs of all instances")
    memory_mib: int | None = pydantic.Field(None, ge=1, description="memory of all instances")
    scope: Literal["pool", "account"] = "pool"
    """``pool``: this pool's instances only; ``account``: every pool naming the same account."""
    vm_vcpus: int | None = pydantic.Field(None, ge=1, description="one VM's vCPUs (override)")
    vm_memory_mib: int | None = pydantic.Field(None, ge=1, description="one VM's MiB (override)")

    @pydantic.model_validator(mode="after")
    def _some_limit(self) -> QuotaOptions:
        if self.instances is None and self.vcpus is None and self.memory_mib is None:
            raise ValueError("a quota needs at least one of instances, vcpus, memory_mib")
        return self

    def limits(self) -> tuple[int | None, int | None, int | None]:
        """(instances, vcpus, memory_mib): what two pools sharing a ledger must agree on."""
        return (self.instances, self.vcpus, self.memory_mib)


@dataclass(frozen=True, slots=True)
class Usage:
    """What VMs count against a quota."""

    instances: int
    vcpus: int
    memory_mib: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.instances + other.instances,
            self.vcpus + other.vcpus,
            self.memory_mib + other.memory_mib,
        )

    def __sub__(self, other: Usage) -> Usage:
        return Usage(
            self.instances - other.instances,
            self.vcpus - other.vcpus,
            self.memory_mib - other.memory_mib,
        )


NOTHING = Usage(0, 0, 0)


def check_quota(quota: QuotaOptions, committed: Usage, new: Usage, where: str) -> None:
    """Raise ``CapacityExceeded`` naming the first limit ``committed + new`` exceeds."""
    for what, used, asked, limit in (
        ("instances", committed.instances, new.instances, quota.instances),
        ("vcpus", committed.vcpus, new.vcpus, quota.vcpus),
        ("memory_mib", committed.memory_mib, new.memory_mib, quota.memory_mib),
    ):
        if limit is not None and used + asked > limit:
            raise exceptions.CapacityExceeded(
                f"quota of {where}: {what} {used} committed + {asked} requested > {limit}"
            )


class QuotaLedger:
    """The VMs counted against one quota in this process, by key. Pure bookkeeping."""

    def __init__(self, quota: QuotaOptions, where: str) -> None:
        """Start empty under ``quota``; ``where`` names it in refusals."""
        self.quota = quota
        self.where = where
        self._by_vm: dict[str, Usage] = {}
        self.committed = NOTHING

    def __contains__(self, vm: object) -> bool:
        return vm in self._by_vm

    def __len__(self) -> int:
        return len(self._by_vm)

    def admit(self, vm: str, usage: Usage) -> None:
        """Count ``vm`` or raise ``CapacityExceeded`` and change nothing (a repeat: nothing)."""
        if vm in self._by_vm:
            return
        check_quota(self.quota, self.committed, usage, self.where)
        self.recommit(vm, usage)

    def recommit(self, vm: str, usage: Usage) -> None:
        """Count ``vm`` without a check (it exists already)."""
        if vm not in self._by_vm:
            self._by_vm[vm] = usage
            self.committed = self.committed + usage

    def release(self, vm: str) -> None:
        """Stop counting ``vm`` (unknown: nothing)."""
        usage = self._by_vm.pop(vm, None)
        if usage is not None:
            self.committed = self.committed - usage


class QuotaBook(Protocol):
    """Where a quota's ledger lives across hosts (PostgreSQL): see ``shared.SharedCloud``."""

    async def admit(
        self, key: str, vm: str, usage: Usage, quota: QuotaOptions, recommit: list[str]
    ) -> None:
        """Count ``recommit`` (no check), then admit ``vm`` against ``quota``, atomically."""

    async def release(self, key: str, vm: str) -> None:
        """Stop counting ``vm`` under ``key``."""


_LEDGERS: dict[str, QuotaLedger] = {}
_LEDGERS_LOCK = threading.Lock()


def ledger_for(key: str, quota: QuotaOptions, where: str) -> QuotaLedger:
    """The process-wide ledger of ``key``; two pools sharing it must declare the same limits."""
    with _LEDGERS_LOCK:
        ledger = _LEDGERS.get(key)
        if ledger is None:
            ledger = _LEDGERS[key] = QuotaLedger(quota, where)
        elif ledger.quota.limits() != quota.limits():
            raise exceptions.ConfigError(
                f"quota of {where} is already {ledger.quota.limits()} (instances, vcpus, "
                f"memory_mib); another pool declares {quota.limits()}: give every pool of "
                "an account-wide quota the same limits"
            )
        return ledger


def forget_ledgers() -> None:
    """Drop every process-wide ledger (tests)."""
    with _LEDGERS_LOCK:
        _LEDGERS.clear()


class QuotaAdmission(Admission):
    """The guard's admission for a cloud pool: one VM's :class:`Usage` against the quota."""

    def __init__(
        self,
        *,
        pool: str,
        account_key: str,
        quota: QuotaOptions,
        sizer: Callable[[], Awaitable[Usage]],
    ) -> None:
        """Admit ``pool``'s VMs (each of ``sizer()``'s size) under ``quota``."""
        self.pool = pool
        self.quota = quota
        if quota.scope == "account":
            self.key, self.where = account_key, f"account {account_key}"
        else:
            self.key, self.where = f"{account_key}|pool:{pool}", f"pool {pool}"
        self.ledger = ledger_for(self.key, quota, self.where)
        self.book: QuotaBook | None = None
        """The cluster-wide ledger, once the store is PostgreSQL (``None``: this process)."""
        self._sizer = sizer
        self._recommitted: list[str] = []

    def _vm(self, name: str) -> str:
        return f"{self.pool}/{name}"

    async def admit(self, spec: VMSpec) -> None:
        """Count the VM (and those recommitted since the last admission) or refuse it."""
        usage = await self._sizer()
        pending, self._recommitted = self._recommitted, []
        if self.book is not None:
            try:
                await self.book.admit(self.key, self._vm(spec.name), usage, self.quota, pending)
            except BaseException:
                self._recommitted.extend(pending)
                raise
            return
        for vm in pending:
            self.ledger.recommit(vm, usage)
        self.ledger.admit(self._vm(spec.name), usage)

    async def release(self, name: str) -> None:
        """Give the VM's share back."""
        vm = self._vm(name)
        if vm in self._recommitted:
            self._recommitted.remove(vm)
        if self.book is not None:
            await self.book.release(self.key, vm)
        else:
            self.ledger.release(vm)

    def recommit(self, spec: VMSpec) -> None:
        """Remember a VM that exists already; it is counted (sized) at the next admission."""
        vm = self._vm(spec.name)
        if vm not in self._recommitted:
            self._recommitted.append(vm)


SizeOf = Callable[[], Awaitable[Usage]]
"""The size of one VM of a pool (asks the cloud once, then cached)."""
