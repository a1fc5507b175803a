"""What the API needs from the controller: the facade of docs/architecture.md, as a Protocol.

:class:`corral.controller.Controller` satisfies it; so does anything else that offers the same
methods. Typing the surfaces against this Protocol keeps them inside the documented seam (they
cannot reach into the controller's internals). This module must not implement anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from corral.locks.status import StatusSource
from corral.pools.model import VM, PoolStatus, Request, Ticket
from corral.tasks import TaskEngine

if TYPE_CHECKING:
    from pydantic import JsonValue

    from corral.backends.static_inventory import MachineStatus
    from corral.config import CorralConfig
    from corral.controller.reconcile import ReconcilePlan
    from corral.controller.reload import ReloadReport
    from corral.store import Store
    from corral.store.pools import AuditEntry


class ControllerFacade(Protocol):
    """The controller operations the HTTP API, the CLI and the metrics use."""

    @property
    def tasks(self) -> TaskEngine:
        """The task engine (``list``, ``show``, ``stop``, ``rollback``, ``clean``)."""

    @property
    def locks(self) -> StatusSource:
        """The lock manager (``status()``)."""

    @property
    def clock(self) -> Callable[[], float]:
        """The controller's wall clock (leases are in its time)."""

    @property
    def store(self) -> Store:
        """The store (the API keeps idempotency keys in ``store.keys``)."""

    async def create_ticket(
        self,
        *,
        owner: str,
        pool: str | None = ...,
        tags: Sequence[str] = ...,
        sandbox: str | None = ...,
        priority: int = ...,
        ttl: float | None = ...,
        meta: Mapping[str, str] | None = ...,
        exclusive: bool = ...,
        count: int = ...,
        requests: Sequence[Request] | None = ...,
    ) -> Ticket:
        """Queue a request for one VM (or ``count`` VMs of one pool, all together; or a list
        ticket: ``requests``, one VM set per pool or tag entry, all together)."""

    async def get_ticket(self, ticket_id: str, /) -> Ticket:
        """One ticket (``TicketNotFound`` otherwise)."""

    async def wait_ticket(self, ticket_id: str, /, timeout: float | None) -> Ticket:
        """Wait, event-driven, until the ticket leaves ``waiting`` or ``timeout`` elapses."""

    async def renew_ticket(self, ticket_id: str, /, *, known: Ticket | None = ...) -> Ticket:
        """Extend the ticket's lease (``known``: as just read, saving a read)."""

    @property
    def shared_store(self) -> bool:
        """Whether other controllers may change the store (then a ticket is re-read)."""

    async def close_ticket(self, ticket_id: str, /) -> Ticket:
        """Close (or cancel) the ticket, releasing its VM."""

    async def list_tickets(
        self,
        *,
        owner: str | None = ...,
        state: str | None = ...,
        meta: Mapping[str, str] | None = ...,
    ) -> Sequence[Ticket]:
        """Tickets, optionally filtered."""

    async def list_pools(self) -> Sequence[PoolStatus]:
        """Every pool's status."""

    async def get_pool(self, name: str, /) -> PoolStatus:
        """One pool's status (``PoolNotFound`` otherwise)."""

    async def list_vms(self, *, pool: str | None = ..., state: str | None = ...) -> Sequence[VM]:
        """VMs, optionally filtered."""

    async def get_vm(self, name: str, /) -> VM:
        """One VM (``VMNotFound`` otherwise)."""

    def assigned_vm(self, name: str, /) -> VM | None:
        """VM ``name`` as this process's assignment read it when it handed it out recently
        (``None`` otherwise): its address and handle without a store read."""

    async def find_vms(
        self,
        *,
        pool: str | None = ...,
        states: Sequence[str] | None = ...,
        ticket_meta: Mapping[str, str] | None = ...,
    ) -> Sequence[VM]:
        """VMs by pool and states; with ``ticket_meta``, those of the open tickets carrying it."""

    async def terminate_vm(
        self, name: str, /, *, if_states: Sequence[str] | None = ..., actor: str | None = ...
    ) -> VM:
        """Start terminating a VM (also one still spawning); with ``if_states``, only a VM in
        one of them (``VMStateMismatch`` otherwise); ``actor`` goes to the audit trail."""

    async def terminate_vms(
        self,
        *,
        pool: str,
        states: Sequence[str] | None = ...,
        unused: bool = ...,
        actor: str = ...,
        dry_run: bool = ...,
    ) -> list[VM]:
        """Terminate a pool's VMs in bulk (all alive, by state, or unused); ``dry_run``: which."""

    async def summary(self, *, pool: str | None = ...) -> str:
        """Every pool (or one) and its VMs in a human-readable form."""

    # --- operators' controls (corral.api.operate) ----------------------------------------------

    async def pause_pool(self, pool: str, /, *, actor: str = ...) -> None:
        """Stop preallocating ``pool``."""

    async def resume_pool(self, pool: str, /, *, actor: str = ...) -> None:
        """Undo a pause or a drain."""

    async def drain_pool(self, pool: str, /, *, actor: str = ..., dry_run: bool = ...) -> list[VM]:
        """Drain ``pool``; the idle VMs terminated now (or that would be, with ``dry_run``)."""

    async def hold_vm(self, name: str, /, seconds: float, *, actor: str = ...) -> VM:
        """Keep a VM for debugging for ``seconds``."""

    async def release_hold(self, name: str, /, *, actor: str = ...) -> VM:
        """End a VM's hold."""

    async def audit(
        self, *, kind: str | None = ..., target: str | None = ..., limit: int = ...
    ) -> Sequence[AuditEntry]:
        """Operators' actions, newest first."""

    async def register_vm(self, pool: str, name: str, address: str, *, actor: str = ...) -> VM:
        """Add a machine made elsewhere to a pool, once it passes a livecheck."""

    async def forget_vm(self, name: str, /, *, force: bool = ..., actor: str = ...) -> VM:
        """Stop tracking a VM without touching it."""

    async def return_machine(self, name: str, /, *, actor: str = ...) -> tuple[str, MachineStatus]:
        """Put a static pool's machine back in service."""

    async def machine_maintenance(
        self, name: str, /, reason: str, *, actor: str = ...
    ) -> tuple[str, MachineStatus]:
        """Take a static pool's machine out of service."""

    async def get_pool_info(self, pool: str) -> dict[str, JsonValue]:
        """Every per-pool key/value pair."""

    async def set_pool_info(
        self, pool: str, key: str, value: JsonValue, *, actor: str | None = ...
    ) -> None:
        """Store (``None``: delete) a per-pool key/value pair."""

    async def reconcile(self, *, dry_run: bool = ...) -> Mapping[str, ReconcilePlan]:
        """Compare the store with every backend (with ``dry_run``: only the plans)."""

    async def reload(self, config: CorralConfig, *, actor: str = ...) -> ReloadReport:
        """Apply a new, already validated configuration's pools without a restart."""
