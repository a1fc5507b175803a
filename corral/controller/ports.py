"""What the controller's parts need from each other, as small protocols.

The parts of the controller (assignment, preallocation, maintenance, VM tasks, tickets, views)
are thin async shells over the pure cores (:mod:`corral.pools.lifecycle`,
:mod:`corral.pools.allocation`). Each one declares here the few operations it uses, and is typed
against that protocol rather than against :class:`corral.controller.Controller`: a part cannot reach
into the facade beyond what it declares, and a test can hand it a small stand-in. The controller
satisfies every protocol. This module must not do anything: it only declares.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from corral.backends.guard import GuardedBackend
from corral.config import CorralConfig
from corral.controller.events import EventBus

if TYPE_CHECKING:
    from corral.controller.operators import Operators, PoolMode
from corral.pools.allocation import PoolLimits
from corral.pools.config import PoolConfig
from corral.pools.lifecycle import Effect, TicketState, VMEvent
from corral.pools.model import Ticket
from corral.store import Store
from corral.store.pools import LeaseFence, TicketRow, VMRow, WriteFence
from corral.tasks import TaskEngine
from corral.types import JSON


class Base(Protocol):
    """The store, the clock, the configuration and the event bus."""

    store: Store
    clock: Callable[[], float]
    tick: float
    config: CorralConfig
    events: EventBus

    @property
    def started(self) -> bool:
        """Whether the controller was started."""
        ...

    @property
    def stopped(self) -> bool:
        """Whether the controller is stopping or stopped."""
        ...

    def later(self, delay: float, fn: Callable[[], None]) -> None:
        """Call ``fn`` after ``delay`` seconds unless the controller stops first."""
        ...

    def background(self, coro: Coroutine[object, object, None]) -> None:
        """Run a coroutine in the background (cancelled when the controller stops)."""
        ...


class Pools(Protocol):
    """The pools' configuration and limits."""

    def limits(self, pool: str) -> PoolLimits:
        """The allocation limits of ``pool``."""
        ...

    def all_limits(self) -> list[PoolLimits]:
        """Every pool's limits."""
        ...

    def pool_config(self, pool: str) -> PoolConfig:
        """The configuration of ``pool``."""
        ...


class Stats(Protocol):
    """The buffered statistics."""

    def record(self, pool: str, kind: str, value: float) -> None:
        """Buffer a statistics sample."""
        ...

    def count(self, pool: str, counter: str, by: int = 1) -> None:
        """Buffer a counter increment."""
        ...


class Kicks(Protocol):
    """The two event-driven runners."""

    def kick_assign(self) -> None:
        """Re-run the assignment soon."""
        ...

    def kick_assign_if_waiting(self) -> None:
        """Re-run the assignment soon unless no ticket is known to wait."""
        ...

    def kick_spawn(self, pool: str) -> None:
        """Re-plan ``pool``'s preallocation soon."""
        ...


class VMWrites(Protocol):
    """The one way a VM changes (:meth:`corral.controller.Controller.apply_vm`)."""

    async def apply_vm(
        self,
        name: str,
        event: VMEvent,
        *,
        current: str | None = None,
        fence: WriteFence | None = None,
        **changes: object,
    ) -> VMRow | None:
        """Move a VM by ``event``: the lifecycle's conditional write and its effects (with
        ``fence``: made only while the lease or lock it names holds, checked by the store)."""
        ...

    async def vm_moved(self, row: VMRow, effects: Sequence[Effect]) -> None:
        """Carry out the effects of a move the store wrote itself."""
        ...


class TicketNews(Protocol):
    """Publishing a ticket's change."""

    def ticket_changed(
        self, ticket_id: str, state: str, data: Mapping[str, JSON], *, ticket: Ticket | None = None
    ) -> None:
        """Publish a ticket's change and wake its waiters."""
        ...


class AssignerHost(Base, Pools, Stats, Kicks, TicketNews, Protocol):
    """What :class:`corral.controller.assignment.Assigner` uses."""

    @property
    def shared_store(self) -> bool:
        """Whether other controllers may change the store (insert tickets unseen here)."""
        ...

    def consumed(self, pool: str) -> None:
        """A ticket took a VM of ``pool`` (demand estimate, top-up)."""
        ...


class PreallocatorHost(Base, Pools, Stats, VMWrites, Protocol):
    """What :class:`corral.controller.preallocation.Preallocator` uses."""

    maintains: bool

    def pool_mode(self, pool: str) -> PoolMode:
        """How ``pool`` operates now."""
        ...

    def leads(self, pool: str) -> bool:
        """Whether this host leads ``pool`` (only the leader preallocates; issue 11)."""
        ...

    async def check_leadership(self, pool: str) -> None:
        """``StaleEpoch`` unless this host still leads ``pool`` (confirmed by the store)."""
        ...

    def lease_fence(self, pool: str) -> LeaseFence | None:
        """The fence of a write on behalf of ``pool``'s leadership (``None`` on a single host;
        ``StaleEpoch`` when this host does not lead it)."""
        ...

    async def submit_spawn(self, row: VMRow) -> None:
        """Submit the spawn task of a VM just recorded as ``spawning``."""
        ...


class VMTasksHost(Base, Pools, VMWrites, Protocol):
    """What :class:`corral.controller.vmtasks.VMTasks` uses."""

    tasks: TaskEngine

    def take_failure(self, name: str) -> str | None:
        """Why the spawn of ``name`` failed, if this process saw it fail."""
        ...


class TicketsHost(Base, Pools, Kicks, VMWrites, TicketNews, Protocol):
    """What :class:`corral.controller.tickets.Tickets` uses."""

    async def insert_ticket(
        self, row: TicketRow, inserted: Callable[[TicketRow], None]
    ) -> Ticket | None:
        """Store a new ticket with an assignment round in the same store unit (see
        :meth:`corral.controller.assignment.Assigner.insert`); the ticket if assigned."""
        ...

    def pool_mode(self, pool: str) -> PoolMode:
        """How ``pool`` operates now (a draining pool reuses nothing)."""
        ...

    def removed_pools(self) -> frozenset[str]:
        """Pools removed by a configuration reload and draining away (no new tickets)."""
        ...

    @property
    def shared_store(self) -> bool:
        """Whether other controllers may change the store."""
        ...


class OperatorsHost(Base, Kicks, VMWrites, Protocol):
    """What :class:`corral.controller.operators.Operators` uses."""

    def wake_maintenance(self) -> None:
        """Run the maintenance duties now rather than at the next tick."""
        ...


class MaintenanceHost(Base, Pools, Stats, Kicks, VMWrites, Protocol):
    """What :class:`corral.controller.maintenance.Maintenance` uses."""

    tasks: TaskEngine  # retention forgets done tasks through it

    def backend(self, pool: str) -> GuardedBackend:
        """The guarded backend of ``pool``."""
        ...

    def busy(self, name: str) -> bool:
        """Whether a task of this controller works on VM ``name``."""
        ...

    def leads(self, pool: str) -> bool:
        """Whether this host leads ``pool``'s maintenance (always, on a single-host store)."""
        ...

    async def check_leadership(self, pool: str) -> None:
        """``StaleEpoch`` unless this host still leads ``pool`` (confirmed by the store)."""
        ...

    async def flush_stats(self) -> None:
        """Write the buffered statistics."""
        ...

    async def get_ticket(self, ticket_id: str, /) -> Ticket:
        """One ticket."""
        ...

    async def end_ticket(
        self,
        ticket: Ticket,
        state: TicketState,
        reason: str | None,
        *,
        reuse: bool = True,
        fence: LeaseFence | None = None,
    ) -> Ticket | None:
        """End an open ticket and free its VM (``fence``: on behalf of the pool's leader)."""
        ...

    def lease_fence(self, pool: str) -> LeaseFence | None:
        """The fence of a write on behalf of ``pool``'s leadership (``None`` on a single host;
        ``StaleEpoch`` when this host does not lead it)."""
        ...

    async def submit_terminate(self, name: str, *, row: VMRow | None = None) -> None:
        """Submit a termination task for a VM in ``terminating``."""
        ...

    async def submit_release(self, name: str) -> None:
        """Submit a release-cleanup task for a VM in ``releasing``."""
        ...

    operators: Operators

    def pool_mode(self, pool: str) -> PoolMode:
        """How ``pool`` operates now."""
        ...

    def expected_in_flight(self, pool: str) -> int:
        """Spawns the measured demand of ``pool`` needs in flight now."""
        ...

    async def sweep(self) -> int:
        """Terminate leaked machines (the periodic leak sweep)."""
        ...


class RecoveryHost(Base, Kicks, VMWrites, TicketNews, Protocol):
    """What :mod:`corral.controller.recovery` (reconciliation and the sweep) uses."""

    tasks: TaskEngine
    adopt: bool

    def backends(self) -> dict[str, GuardedBackend]:
        """The guarded backend of every pool."""
        ...

    def busy_vms(self) -> set[str]:
        """The VMs an unfinished task of this controller works on."""
        ...

    def leads(self, pool: str) -> bool:
        """Whether this host leads ``pool``'s maintenance (always, on a single-host store)."""
        ...

    def lease_fence(self, pool: str) -> LeaseFence | None:
        """The fence of a write on behalf of ``pool``'s leadership (``None`` on a single host;
        ``StaleEpoch`` when this host does not lead it)."""
        ...
