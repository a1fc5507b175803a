"""The pools concept of the store: VM and ticket rows, pool counters, info and samples.

The controller turns these rows into :mod:`corral.pools.model` values; the store keeps states as
plain strings and never interprets them beyond the conditions it is asked to check. The two writes
that must be atomic under any concurrency are single transactions here: :meth:`assign` (a VM to a
ticket: conditional on the VM being ready and free and the ticket waiting) and :meth:`close_ticket`
(a ticket's end together with its VM's next state). This module must not do any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

VM_COLUMNS = (
    "state",
    "state_since",
    "address",
    "handle",
    "ticket",
    "owner",
    "sandbox",
    "uses",
    "ready_at",
    "last_used_at",
    "livecheck_failures",
    "last_livecheck_at",
    "reason",
    "hold_until",
)
"""The VM columns :meth:`PoolsRepository.update_vm` may change."""

TICKET_COLUMNS = ("state", "expires_at", "vm", "assigned_at", "closed_at", "reason")
"""The ticket columns :meth:`PoolsRepository.update_ticket` may change."""


@dataclass(frozen=True, slots=True)
class VMRow:
    """One VM as stored. ``owner`` is the owner of ``ticket`` while the VM is assigned."""

    name: str
    pool: str
    state: str
    created_at: float
    state_since: float
    id_in_pool: int
    address: str | None = None
    handle: str | None = None
    ticket: str | None = None
    owner: str | None = None
    sandbox: str | None = None
    uses: int = 0
    ready_at: float | None = None
    last_used_at: float | None = None
    livecheck_failures: int = 0
    last_livecheck_at: float | None = None
    reason: str | None = None
    hold_until: float | None = None
    """Set while an operator holds the VM (or asked to hold it after its ticket): until when."""


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One operator action: who did what to which VM or pool (``kind``: vm or pool), when."""

    at: float
    actor: str
    action: str
    kind: str
    target: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class TicketRow:
    """One ticket as stored. ``seq`` is given by the store: it orders tickets by age."""

    id: str
    owner: str
    state: str
    created_at: float
    expires_at: float | None
    pool: str | None
    tags: tuple[str, ...]
    sandbox: str | None
    priority: int
    ttl: float | None
    seq: int = 0
    vm: str | None = None
    assigned_at: float | None = None
    closed_at: float | None = None
    reason: str | None = None
    meta: tuple[tuple[str, str], ...] = ()
    """Small key/value metadata given at creation (Copr's task id, build id, chroot), sorted."""


@dataclass(frozen=True, slots=True)
class Closed:
    """The result of :meth:`PoolsRepository.close_ticket`: the ticket and its former VM."""

    ticket: TicketRow
    vm: VMRow | None


@dataclass(frozen=True, slots=True)
class AllocationInputs:
    """What one allocation round reads, in one transaction (see
    :meth:`PoolsRepository.allocation_inputs`)."""

    waiting: tuple[TicketRow, ...]
    held: Mapping[tuple[str, str], int]
    ready: tuple[VMRow, ...]


def ticket_fits_pool(ticket: TicketRow, pool: str, tags: frozenset[str]) -> bool:
    """A ticket may be served by a pool when it names it (or none) and its tags are a subset of
    the pool's (the same rule as :func:`corral.pools.allocation.pools_for`)."""
    return ticket.pool in (None, pool) and tags.issuperset(ticket.tags)


def wanted_candidates(
    waiting: Sequence[TicketRow], pools: Mapping[str, frozenset[str]]
) -> dict[tuple[str, str | None], int]:
    """How many free ready VMs of each ``(pool, sandbox)`` an allocation round can use at most:
    fresh ones (sandbox ``None``) for every fitting ticket, used ones per ticket of that sandbox."""
    wanted: dict[tuple[str, str | None], int] = {}
    for name, tags in pools.items():
        for ticket in waiting:
            if ticket_fits_pool(ticket, name, tags):
                wanted[(name, None)] = wanted.get((name, None), 0) + 1
                if ticket.sandbox is not None:
                    key = (name, ticket.sandbox)
                    wanted[key] = wanted.get(key, 0) + 1
    return wanted


@dataclass(frozen=True, slots=True)
class IdleUsedVM:
    """A ready VM with no ticket that served tickets before: supply for its sandbox only."""

    name: str
    sandbox: str | None
    last_used_at: float | None


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """What one preallocation round reads, in one transaction (see
    :meth:`PoolsRepository.pool_snapshot`)."""

    counts: Mapping[str, int]
    waiting: tuple[TicketRow, ...]
    held: Mapping[tuple[str, str], int]
    idle_used: tuple[IdleUsedVM, ...] = ()
    """The pool's free ready VMs that were used before, least recently used first."""


class PoolsRepository(Protocol):
    """Where pools' VMs, tickets, info and statistics are persisted (all methods async).

    Every implementation passes ``tests/pools/test_store_contract.py``.
    """

    # --- VMs ----------------------------------------------------------------------------------

    async def create_vm(self, pool: str, *, state: str, now: float) -> VMRow:
        """Record a new VM of ``pool`` in one transaction: its name is ``<pool>-<n>`` with ``n``
        from the pool's counter (never reused) and ``id_in_pool`` the smallest number no alive VM
        of the pool holds (alive: any state but ``terminated``/``failed``)."""
        ...

    async def vms_issued(self, pool: str) -> int:
        """How many VM names ``pool``'s counter has issued (``create_vm``'s ``n`` so far): 0 when
        no VM of the pool was ever recorded. Deleting or purging VMs never lowers it."""
        ...

    async def get_vm(self, name: str) -> VMRow | None:
        """The VM named ``name``, or ``None``."""
        ...

    async def list_vms(
        self,
        *,
        pool: str | None = None,
        states: Sequence[str] | None = None,
        address: str | None = None,
        ticket: str | None = None,
    ) -> list[VMRow]:
        """VMs matching every given filter, oldest first."""
        ...

    async def count_vms(self, pool: str) -> dict[str, int]:
        """How many VMs of ``pool`` are in each state (states with none are left out)."""
        ...

    async def ready_vms(self, pool: str, *, sandbox: str | None, limit: int) -> list[VMRow]:
        """Up to ``limit`` free ready VMs of ``pool``, longest ready first: fresh ones when
        ``sandbox`` is ``None``, else used ones whose last sandbox is ``sandbox``."""
        ...

    async def update_vm(
        self, name: str, *, expect: Sequence[str] | None, changes: Mapping[str, object]
    ) -> VMRow | None:
        """Change columns of VM ``name`` (only :data:`VM_COLUMNS`) if its state is in ``expect``
        (any state when ``None``); the new row, or ``None`` if no VM matched."""
        ...

    async def delete_vm(self, name: str) -> bool:
        """Forget a VM (only one in ``terminated`` or ``failed``); True if one was deleted."""
        ...

    async def purge(self, before: float, *, limit: int | None = None) -> tuple[int, int]:
        """Forget the history older than ``before``: VMs ``terminated``/``failed`` since then and
        tickets that ended (closed, cancelled, expired, failed) since then, at most ``limit`` of
        each (a bounded batch; ``None``: all). Returns how many VMs and tickets were deleted."""
        ...

    async def purge_audit(self, before: float, *, limit: int | None = None) -> int:
        """Forget operator actions older than ``before`` (the oldest first, at most ``limit``);
        how many were deleted."""
        ...

    # --- tickets ------------------------------------------------------------------------------

    async def insert_ticket(self, row: TicketRow) -> TicketRow:
        """Record a new ticket (``Conflict`` if the id exists); returns it with its ``seq``."""
        ...

    async def get_ticket(self, ticket_id: str) -> TicketRow | None:
        """The ticket with this id, or ``None``."""
        ...

    async def list_tickets(
        self,
        *,
        owner: str | None = None,
        states: Sequence[str] | None = None,
        expired_before: float | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> list[TicketRow]:
        """Tickets matching every filter (``expires_at < expired_before``; every ``meta`` pair),
        by priority (higher first) then age."""
        ...

    async def update_ticket(
        self, ticket_id: str, *, expect: Sequence[str], changes: Mapping[str, object]
    ) -> TicketRow | None:
        """Change columns (only :data:`TICKET_COLUMNS`) of a ticket whose state is in
        ``expect``; the new row, or ``None`` if none matched."""
        ...

    async def held(self) -> dict[tuple[str, str], int]:
        """Assigned tickets per ``(owner, pool)``: the VMs that have a ticket."""
        ...

    async def assign(
        self, ticket_id: str, vm_name: str, *, now: float, max_per_owner: int | None = None
    ) -> bool:
        """Give the VM to the ticket in ONE atomic conditional write: only if the VM is
        ``ready`` with no ticket, the ticket is ``waiting`` and (with ``max_per_owner``) the
        ticket's owner holds fewer VMs of the VM's pool. The VM becomes ``in_use`` (uses +1,
        sandbox and owner from the ticket, ``last_used_at=now``), the ticket ``assigned``. False
        (and nothing changed) if any condition failed."""
        ...

    async def allocation_inputs(self, pools: Mapping[str, frozenset[str]]) -> AllocationInputs:
        """In one transaction: the waiting tickets (by priority, then age), the held counts and,
        per :func:`wanted_candidates`, the free ready VMs an allocation round can use — a bounded
        read whatever the number of VMs. ``pools`` maps each pool to its tags."""
        ...

    async def pool_snapshot(self, pool: str) -> PoolSnapshot:
        """In one transaction: ``pool``'s VM counts per state, every waiting ticket (by priority
        then age), the held counts and the pool's idle used VMs (least recently used first)."""
        ...

    async def close_ticket(
        self,
        ticket_id: str,
        *,
        expect: Sequence[str],
        state: str,
        vm_state: str | None,
        now: float,
        reason: str | None = None,
    ) -> Closed | None:
        """End a ticket whose state is in ``expect`` and, in the same transaction, free its VM:
        the VM (if the ticket had one in ``in_use``) loses its ticket and moves to ``vm_state``.
        ``None`` if the ticket was not in ``expect``."""
        ...

    # --- operators: pool modes and the audit trail ---------------------------------------------

    async def set_pool_mode(self, pool: str, mode: str | None) -> None:
        """Record ``pool``'s operating mode (``paused``, ``draining``; ``None``: active)."""
        ...

    async def pool_modes(self) -> dict[str, str]:
        """Every pool whose mode is not active, with its mode."""
        ...

    async def add_audit(self, entry: AuditEntry) -> None:
        """Record one operator action."""
        ...

    async def list_audit(
        self, *, kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """The most recent operator actions (newest first), of one kind and target if given."""
        ...

    # --- info and statistics ------------------------------------------------------------------

    async def set_info(self, pool: str, key: str, value: str | None) -> None:
        """Set (or with ``None`` delete) a per-pool key/value pair (value is JSON text)."""
        ...

    async def get_info(self, pool: str) -> dict[str, str]:
        """Every key/value pair of ``pool``."""
        ...

    async def add_sample(self, pool: str, kind: str, value: float, *, at: float) -> None:
        """Record one statistics sample (``spawn_time``, ``wait_time``, ...)."""
        ...

    async def samples(self, pool: str, kind: str, *, limit: int) -> list[float]:
        """The most recent ``limit`` samples of that kind, oldest first."""
        ...

    async def bump(self, pool: str, counter: str, by: int = 1) -> None:
        """Add ``by`` to a per-pool counter (``spawn_attempts``, ``spawn_failures``, ...)."""
        ...

    async def counters(self, pool: str) -> dict[str, int]:
        """Every counter of ``pool``."""
        ...

    async def record_stats(
        self,
        samples: Sequence[tuple[str, str, float, float]],
        counts: Mapping[tuple[str, str], int],
    ) -> None:
        """In one transaction: add samples ``(pool, kind, value, at)`` and add to counters
        ``{(pool, counter): by}`` (the controller buffers statistics and flushes them here)."""
        ...
