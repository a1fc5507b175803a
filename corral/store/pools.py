"""The pools concept of the store: VM and ticket rows, pool counters, info and samples.

The controller turns these rows into :mod:`corral.pools.model` values; the store keeps states as
plain strings and never interprets them beyond the conditions it is asked to check. The two writes
that must be atomic under any concurrency are single transactions here: :meth:`assign` (a VM to a
ticket: conditional on the VM being ready and free and the ticket waiting) and :meth:`close_ticket`
(a ticket's end together with its VM's next state). This module must not do any I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    "external",
)
"""The VM columns :meth:`PoolsRepository.update_vm` may change."""

TICKET_COLUMNS = ("state", "expires_at", "vm", "assigned_at", "closed_at", "reason")
"""The ticket columns :meth:`PoolsRepository.update_ticket` may change."""


@dataclass(frozen=True, slots=True)
class LeaseFence:
    """A write on behalf of a leadership lease: it must still be ``session``'s, live, at
    ``epoch`` when the write commits (see :meth:`PoolsRepository.create_vm`)."""

    name: str
    session: str
    epoch: int


@dataclass(frozen=True, slots=True)
class LockFence:
    """A write on behalf of a held lock (a task's ``vm/<name>``): the grant of ``key`` with
    fencing ``token`` must still be in the cluster's lock table when the write commits (see
    :meth:`PoolsRepository.update_vm`)."""

    key: str
    token: int


WriteFence = LeaseFence | LockFence
"""What a fenced write carries: a leader's lease or a lock holder's grant (issue 11)."""


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
    external: bool = False
    """Made elsewhere (registered) or being forgotten: retiring forgets it, never destroys it."""
    load: int = 0
    """How many tickets hold the VM (0 while free; at most its pool's ``slots``)."""
    exclusive: bool = False
    """True while an exclusive ticket holds it."""
    tickets: tuple[str, ...] = ()
    """Every ticket holding it, in the order they came (``ticket`` is the first)."""


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
    exclusive: bool = False
    """Whole machines only: shares none of its VMs."""
    count: int = 1
    """How many machines the ticket wants (all together or none)."""
    vms: tuple[str, ...] = ()
    """Every VM of an assigned multi-machine ticket (``vm`` is the first); empty for one VM."""
    requests: tuple[tuple[str | None, tuple[str, ...], int], ...] = ()
    """A list ticket's ``(pool, tags, count)`` entries (``pool`` and ``tags`` are then empty and
    ``count`` is their total; its VMs may be of several pools); empty for any other ticket."""

    @property
    def parts(self) -> tuple[tuple[str | None, tuple[str, ...], int], ...]:
        """Its ``requests``, or its one ``(pool, tags, count)``."""
        return self.requests or ((self.pool, self.tags, self.count),)


@dataclass(frozen=True, slots=True)
class Closed:
    """The result of :meth:`PoolsRepository.close_ticket`: the ticket and its former VM."""

    ticket: TicketRow
    vm: VMRow | None
    others: tuple[VMRow, ...] = ()
    """The further VMs of a multi-machine ticket that were freed with it."""


@dataclass(frozen=True, slots=True)
class AllocationInputs:
    """What one allocation round reads, in one transaction (see
    :meth:`PoolsRepository.allocation_inputs`)."""

    waiting: tuple[TicketRow, ...]
    held: Mapping[tuple[str, str], int]
    ready: tuple[VMRow, ...]


@dataclass(frozen=True, slots=True)
class AssignWrite:
    """One conditional assignment decided by an allocation round, as
    :meth:`PoolsRepository.assign_many` takes it (``assign`` is the case of one free VM)."""

    ticket: str
    vms: tuple[tuple[str, int], ...]
    now: float
    slots: int = 1
    max_per_owner: int | None = None
    owner_limits: Mapping[str, int] | None = None


Decide = Callable[[AllocationInputs], Sequence[AssignWrite]]
"""An allocation round's decision: the inputs it read -> the conditional writes to make. Pure (it
runs inside a store transaction, possibly in a worker thread): no I/O, no event loop."""


@dataclass(frozen=True, slots=True)
class InsertedAssigned:
    """The result of :meth:`PoolsRepository.insert_ticket_assigning`."""

    row: TicketRow
    """The new ticket as inserted (``waiting``, with its ``seq``)."""
    inputs: AllocationInputs
    """What the round read, the new ticket among the waiting."""
    writes: tuple[AssignWrite, ...]
    """What the round decided, in order."""
    done: tuple[bool, ...]
    """Per write: made (True) or refused by its conditions (False, nothing changed)."""


def ticket_fits_pool(ticket: TicketRow, pool: str, tags: frozenset[str]) -> bool:
    """A ticket may be served by a pool when it names it (or none) and its tags are a subset of
    the pool's (the same rule as :func:`corral.pools.allocation.pools_for`)."""
    return ticket.pool in (None, pool) and tags.issuperset(ticket.tags)


def wanted_candidates(
    waiting: Sequence[TicketRow], pools: Mapping[str, frozenset[str]]
) -> dict[tuple[str, str | None], int]:
    """How many free ready VMs of each ``(pool, sandbox)`` an allocation round can use at most:
    fresh ones (sandbox ``None``) for every fitting ticket, used ones per ticket of that sandbox
    (a multi-machine ticket counts its ``count``)."""
    wanted: dict[tuple[str, str | None], int] = {}
    for name, tags in pools.items():
        for ticket in waiting:
            for pool, ticket_tags, count in ticket.parts:  # a list ticket: each of its entries
                if pool not in (None, name) or not tags.issuperset(ticket_tags):
                    continue
                wanted[(name, None)] = wanted.get((name, None), 0) + count
                if ticket.sandbox is not None:
                    key = (name, ticket.sandbox)
                    wanted[key] = wanted.get(key, 0) + count
    return wanted


def wanted_shared(
    waiting: Sequence[TicketRow], pools: Mapping[str, frozenset[str]], shared: Mapping[str, int]
) -> dict[tuple[str, str | None], int]:
    """How many shared VMs with room of each ``(pool, sandbox)`` an allocation round can use at
    most: one per fitting one-machine ticket that is not exclusive, of pools in ``shared``."""
    wanted: dict[tuple[str, str | None], int] = {}
    for name in shared:
        tags = pools.get(name)
        if tags is None:
            continue
        for ticket in waiting:
            if (
                ticket.count == 1
                and not ticket.requests
                and not ticket.exclusive
                and ticket_fits_pool(ticket, name, tags)
            ):
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
    blocked: bool = False
    """``unless(counts)`` held (see :meth:`PoolsRepository.pool_snapshot`): only the counts
    were read (``waiting``, ``held`` and ``idle_used`` are left empty)."""


class PoolsRepository(Protocol):
    """Where pools' VMs, tickets, info and statistics are persisted (all methods async).

    Every implementation passes ``tests/pools/test_store_contract.py``.
    """

    # --- VMs ----------------------------------------------------------------------------------

    async def create_vm(
        self, pool: str, *, state: str, now: float, fence: LeaseFence | None = None
    ) -> VMRow:
        """Record a new VM of ``pool`` in one transaction: its name is ``<pool>-<n>`` with ``n``
        from the pool's counter (never reused) and ``id_in_pool`` the smallest number no alive VM
        of the pool holds (alive: any state but ``terminated``/``failed``).

        With ``fence`` (a cluster leader's lease, issue 11) the row is written only while that
        lease is live under that epoch, checked in the same transaction under a share lock of
        the lease row (so no other host can take the lease before this commits); otherwise
        ``StaleEpoch`` and nothing is written. Only the PostgreSQL store has cluster leases: the
        other stores are single-host and ignore it."""
        ...

    async def register_vm(
        self, pool: str, name: str, *, address: str, handle: str, now: float
    ) -> VMRow:
        """Record a machine made elsewhere as a ``ready``, ``external`` VM named ``name`` of
        ``pool`` in one transaction (``id_in_pool`` as in :meth:`create_vm`; the pool's counter is
        not touched). ``Conflict`` when any VM of that name is recorded (nothing is written)."""
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
        self,
        name: str,
        *,
        expect: Sequence[str] | None,
        changes: Mapping[str, object],
        fence: WriteFence | None = None,
    ) -> VMRow | None:
        """Change columns of VM ``name`` (only :data:`VM_COLUMNS`) if its state is in ``expect``
        (any state when ``None``); the new row, or ``None`` if no VM matched.

        With ``fence`` the write is made only while the fence holds, checked in the same
        statement under a share lock of the lease row or the grant row (so the lease cannot
        change hands, nor the grant be freed, before the write commits): a ``LeaseFence`` that
        no longer holds raises ``StaleEpoch``, a ``LockFence`` whose grant is gone
        ``StaleToken``, and nothing is written. Only the PostgreSQL store has cluster leases
        and a lock table: the other stores are single-host and ignore it."""
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

    async def insert_ticket_assigning(
        self,
        row: TicketRow,
        pools: Mapping[str, frozenset[str]],
        *,
        shared: Mapping[str, int] | None = None,
        decide: Decide,
    ) -> InsertedAssigned:
        """Record a new ticket and run an allocation round in the SAME transaction: insert it
        (as :meth:`insert_ticket`), read :meth:`allocation_inputs` (``pools``, ``shared``),
        call ``decide`` on them and make each decided write as :meth:`assign_many` would, in
        order. A fresh ticket on a warm pool is then inserted and assigned in one unit of work
        (one thread hop) instead of three. A refused write changes nothing; the insert stands
        whatever the writes did. ``Conflict`` (and nothing stored) if the id exists."""
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
        """Machines held per ``(owner, pool)``: every assigned ticket counts its ``count``
        in the pool of its VM (a shared VM counts once for each of its tickets); a list ticket
        counts each of its VMs in that VM's pool."""
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

    async def assign_many(
        self,
        ticket_id: str,
        vms: Sequence[tuple[str, int]],
        *,
        now: float,
        slots: int = 1,
        max_per_owner: int | None = None,
        owner_limits: Mapping[str, int] | None = None,
    ) -> bool:
        """Give every VM of ``vms`` (``(name, load)`` pairs, distinct names of one pool) to the
        ticket in ONE transaction, all or nothing. Each VM is taken only if it still holds exactly
        ``load`` tickets: ``load`` 0 — ``ready`` with no ticket (it becomes ``in_use``, sandbox
        and owner from the ticket); ``load`` > 0 — ``in_use``, not exclusive, serving the
        ticket's sandbox, ``load + 1 <= slots`` and the ticket not exclusive (it joins). Every
        VM's ``load`` goes up by one (a conditional update on the count), ``uses`` too, and the
        ticket is appended to its ``tickets``; an exclusive ticket marks its VMs exclusive. The
        ticket must be ``waiting`` and ask for exactly ``len(vms)`` machines, and (with
        ``max_per_owner``) its owner must hold no more than ``max_per_owner`` machines of the
        pool with this ticket's. False (and nothing changed) if any condition failed.

        A list ticket (with ``requests``) may take VMs of several pools, each free (``load``
        0); ``owner_limits`` maps each of their pools that has a ``max_per_owner`` to it, and
        its owner must hold no more than that many machines of each with this ticket's."""
        ...

    async def allocation_inputs(
        self, pools: Mapping[str, frozenset[str]], *, shared: Mapping[str, int] | None = None
    ) -> AllocationInputs:
        """In one transaction: the waiting tickets (by priority, then age), the held counts and,
        per :func:`wanted_candidates`, the free ready VMs an allocation round can use — a bounded
        read whatever the number of VMs. ``pools`` maps each pool to its tags; ``shared`` maps
        the pools whose VMs serve several tickets to their ``slots``: their ``in_use`` VMs with
        room (not exclusive, ``load < slots``) are read too, as many per sandbox as tickets."""
        ...

    async def pool_snapshot(
        self, pool: str, *, unless: Callable[[Mapping[str, int]], bool] | None = None
    ) -> PoolSnapshot:
        """In one transaction: ``pool``'s VM counts per state, every waiting ticket (by priority
        then age), the held counts and the pool's idle used VMs (least recently used first).
        With ``unless`` (pure: it may run in a worker thread), the counts are read first and,
        if ``unless(counts)``, nothing more: a snapshot with ``blocked`` set (a saturated pool
        costs one small read, in the same unit as the full one would be)."""
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
        fence: LeaseFence | None = None,
    ) -> Closed | None:
        """End a ticket whose state is in ``expect`` and, in the same transaction, free its VMs:
        each VM (if the ticket had it in ``in_use``) loses the ticket; the last ticket of a VM
        frees it (``load`` 0, moved to ``vm_state``: :attr:`Closed.vm` and
        :attr:`Closed.others`), while a VM other tickets still share only counts one less (a
        conditional update on its count) and stays ``in_use``. ``None`` if the ticket was not
        in ``expect``.

        With ``fence`` (a pool leader ending a ticket: lease expiry, a failed livecheck) the
        ticket's end is written only while that lease is live under that epoch, checked in the
        ending statement as :meth:`update_vm` does; otherwise ``StaleEpoch`` and nothing is
        written (single-host stores ignore it)."""
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
