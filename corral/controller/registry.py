"""Machines corral did not make, and machines it lets go of (issue 15): register, forget, return.

- **Register** (Copr's ``add_vm_to_pool``): a machine made elsewhere joins a pool whose backend
  allows it (:data:`corral.backends.base.Capability.REGISTER`). It is livechecked first, and only
  a machine that passes is recorded, ``ready`` and *external*; nothing is written otherwise.
  Reconciliation never marks an external VM lost for missing from the backend's ``list()``, and
  when it retires (age, uses, idle time, livechecks, an operator's terminate) its termination task
  forgets it instead of calling the backend (``corral.controller.steps``).
- **Forget** (Copr's ``remove_vm_from_pool``): corral stops tracking a VM without touching it. The
  VM is marked external and retired in one conditional write, so the same path forgets it; its
  record stays as a ``forgotten`` tombstone that reconciliation and the leak sweep leave alone
  (:mod:`corral.pools.restart`) and retention never purges. A VM in use is refused unless
  ``force``: then its ticket fails first (the machine is not touched).
- **Maintenance and return**: a static pool's machine leaves service with a reason, and comes
  back (``corral.backends.static``).

Every action is in the audit trail under the VM's (or machine's) name. State changes go through
the lifecycle (``Controller.apply_vm``); this module calls a backend only to livecheck a machine
that is being registered, through its guard.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Protocol

from corral import exceptions
from corral.backends import static
from corral.backends.base import Capability, Handle, is_valid_address
from corral.backends.guard import GuardedBackend
from corral.backends.static_inventory import MachineStatus
from corral.config import CorralConfig
from corral.controller import records
from corral.controller.operators import Operators, PoolMode
from corral.pools.lifecycle import ALIVE_VM_STATES, Effect, TicketState, VMEvent, VMState, vm_move
from corral.pools.model import VM, Ticket
from corral.store import Store
from corral.store.pools import VMRow, WriteFence

NAME_LIMIT = 128
"""The longest VM name the store keeps."""
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
FORGOTTEN_REASON = "forgotten by {actor}"
"""The reason recorded on a VM an operator forgot."""
FORCE_REASON = "its VM was forgotten by an operator"
"""The reason recorded on the ticket of a VM forgotten with ``force``."""
REASON_LIMIT = 1000
"""The longest maintenance reason an operator may give."""


class RegistryHost(Protocol):
    """What :class:`Registry` needs of the controller."""

    config: CorralConfig
    store: Store
    operators: Operators
    clock: Callable[[], float]

    def backend(self, pool: str) -> GuardedBackend:
        """The guarded backend of ``pool``."""
        ...

    def backends(self) -> dict[str, GuardedBackend]:
        """The guarded backend of every pool."""
        ...

    def pool_mode(self, pool: str) -> PoolMode:
        """How ``pool`` operates now."""
        ...

    async def apply_vm(
        self,
        name: str,
        event: VMEvent,
        *,
        current: str | None = None,
        fence: WriteFence | None = None,
        **changes: object,
    ) -> VMRow | None:
        """Move VM ``name`` by ``event`` (the lifecycle's conditional write and its effects)."""
        ...

    async def vm_moved(self, row: VMRow, effects: Sequence[Effect]) -> None:
        """Carry out the effects of a move the store wrote."""
        ...

    async def get_ticket(self, ticket_id: str, /) -> Ticket:
        """One ticket."""
        ...

    async def end_ticket(
        self, ticket: Ticket, state: TicketState, reason: str | None, *, reuse: bool = True
    ) -> Ticket | None:
        """End an open ticket and free its VM."""
        ...


def check_name(name: object, pools: list[str]) -> str:
    """A registered machine's name: 1-128 characters (letters, digits, ``._-``, starting with a
    letter or digit), and not in any pool's own naming scheme (``<pool>-<n>``), which corral
    issues to the VMs it spawns."""
    if not isinstance(name, str) or not 0 < len(name) <= NAME_LIMIT or not _NAME.fullmatch(name):
        raise exceptions.InvalidInput(
            f"VM name {str(name)[:140]!r} must be 1 to {NAME_LIMIT} letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    for pool in pools:
        if re.fullmatch(rf"{re.escape(pool)}-\d+", name):
            raise exceptions.InvalidInput(
                f"VM name {name!r} is in pool {pool}'s own naming scheme ({pool}-<n>), which "
                "corral gives to the VMs it spawns: choose another name"
            )
    return name


class Registry:
    """Register, forget and return machines for one controller."""

    def __init__(self, controller: RegistryHost) -> None:
        self._ctl = controller

    async def register(self, pool: str, name: str, address: str, *, actor: str) -> VM:
        """Add machine ``name`` at ``address``, made elsewhere, to ``pool`` once it passes a
        livecheck; it is then ``ready`` and external. Bad input, a backend without the
        ``register`` capability, a taken name, a full or draining pool, or a failed livecheck:
        an error, and nothing is recorded (a failed livecheck is in the audit trail)."""
        ctl = self._ctl
        ctl.config.pool(pool)  # PoolNotFound
        check_name(name, sorted(ctl.config.pools))
        if not isinstance(address, str) or not is_valid_address(address):
            raise exceptions.InvalidInput(
                f"address {str(address)[:260]!r} is not an IP address or host name"
            )
        guarded = ctl.backend(pool)
        if not guarded.has(Capability.REGISTER):
            hint = (
                ": list the machine in the pool's inventory instead"
                if isinstance(guarded.backend, static.OperatesMachines)
                else " (a script backend needs a livecheck command)"
                if guarded.type_name == "script"
                else ""
            )
            raise exceptions.CapabilityMissing(
                f"pool {pool}'s backend ({guarded.type_name}) cannot take machines made "
                f"elsewhere{hint}"
            )
        if ctl.pool_mode(pool) is PoolMode.DRAINING:
            raise exceptions.Conflict(f"pool {pool} is draining: resume it first")
        await self._check_free(name)
        limit = ctl.config.pool(pool).max
        counts = await ctl.store.pools.count_vms(pool)
        alive = sum(n for state, n in counts.items() if state in ALIVE_VM_STATES)
        if alive >= limit:
            raise exceptions.Conflict(
                f"pool {pool} has {alive} VMs alive, its max is {limit}: raise max or free one"
            )
        handle = guarded.backend.adopt(name, address)
        await self._livecheck(guarded, handle, pool, name, address, actor)
        try:
            row = await ctl.store.pools.register_vm(
                pool, name, address=address, handle=handle.to_json(), now=ctl.clock()
            )
        except exceptions.Conflict as exc:  # registered meanwhile by another request
            raise exceptions.VMExists(f"a VM named {name!r} is already recorded") from exc
        await ctl.operators.audit(actor, "register", "vm", name, f"pool {pool} at {address}")
        await ctl.vm_moved(row, vm_move(VMEvent.REGISTERED).effects)
        return records.vm(row)

    async def _check_free(self, name: str) -> None:
        row = await self._ctl.store.pools.get_vm(name)
        if row is None:
            return
        if row.state == VMState.FORGOTTEN:
            raise exceptions.VMExists(
                f"VM {name!r} was forgotten; its record stays so that corral never touches that "
                "machine again: register it under another name"
            )
        raise exceptions.VMExists(f"a VM named {name!r} is already recorded ({row.state})")

    async def _livecheck(
        self,
        guarded: GuardedBackend,
        handle: Handle,
        pool: str,
        name: str,
        address: str,
        actor: str,
    ) -> None:
        try:
            alive = await guarded.livecheck(handle)
            why = "its livecheck failed"
        except exceptions.BackendError as exc:
            alive, why = False, f"its livecheck could not run: {exc}"
        if alive:
            return
        await self._ctl.operators.audit(
            actor, "register-refused", "vm", name, f"pool {pool} at {address}: {why}"
        )
        raise exceptions.MachineNotAlive(
            f"machine {name} at {address} did not join pool {pool}: {why}; nothing was recorded"
        )

    async def forget(self, name: str, *, force: bool = False, actor: str) -> VM:
        """Stop tracking VM ``name`` without touching it: it ends ``forgotten`` (through
        ``terminating``, with no backend call), and its record stays as a tombstone. A VM in use
        is refused (``VMInUse``) unless ``force``, which fails its ticket first; a VM spawning,
        terminating or gone is refused (``VMStateMismatch``); forgetting twice is harmless."""
        ctl = self._ctl
        if not isinstance(name, str) or not name:
            raise exceptions.InvalidInput("a VM name must be a non-empty string")
        if not isinstance(force, bool):
            raise exceptions.InvalidInput("force must be true or false")
        failed_ticket: str | None = None
        for _ in range(5):
            row = await ctl.store.pools.get_vm(name)
            if row is None:
                raise exceptions.VMNotFound(f"no VM named {name!r}")
            self._check_forgettable(row)
            if row.state == VMState.FORGOTTEN or (
                row.state == VMState.TERMINATING and row.external
            ):
                if failed_ticket is not None:  # this call failed its ticket, which retired it
                    await ctl.operators.audit(
                        actor, "forget", "vm", name, f"force: ticket {failed_ticket} failed"
                    )
                return records.vm(row)  # forgotten, or being forgotten
            reason = FORGOTTEN_REASON.format(actor=actor)
            if row.state == VMState.IN_USE:
                if not force:
                    raise exceptions.VMInUse(
                        f"VM {name} serves ticket {row.ticket}: forgetting it fails that ticket "
                        "(the machine is not touched); to do so: corral vm forget --force "
                        "(force=true over HTTP)"
                    )
                marked = await ctl.apply_vm(
                    name, VMEvent.FORGET_MARKED, current=row.state, external=True, reason=reason
                )
                if marked is None or marked.ticket is None:
                    continue
                failed_ticket = marked.ticket
                ticket = await ctl.get_ticket(marked.ticket)
                # the ticket's end retires the VM; being external, it is forgotten, not destroyed
                await ctl.end_ticket(ticket, TicketState.FAILED, FORCE_REASON, reuse=False)
                continue
            moved = await ctl.apply_vm(
                name, VMEvent.FORGET_REQUESTED, current=row.state, external=True, reason=reason
            )
            if moved is not None:
                detail = "" if failed_ticket is None else f"force: ticket {failed_ticket} failed"
                await ctl.operators.audit(actor, "forget", "vm", name, detail or None)
                return records.vm(moved)
        raise exceptions.Conflict(f"VM {name} keeps changing; try again")

    def _check_forgettable(self, row: VMRow) -> None:
        guarded = self._ctl.backends().get(row.pool)
        if guarded is not None and isinstance(guarded.backend, static.OperatesMachines):
            raise exceptions.CapabilityMissing(
                f"VM {row.name} is a reservation of a static pool's machine: remove the machine "
                "from the pool's inventory, or put it in maintenance, instead"
            )
        if row.state == VMState.SPAWNING:
            raise exceptions.VMStateMismatch(
                f"VM {row.name} is still spawning: forget it once it is ready, or terminate it"
            )
        if row.state == VMState.TERMINATING and not row.external:
            raise exceptions.VMStateMismatch(
                f"VM {row.name} is being terminated: too late to forget it"
            )
        if row.state in (VMState.TERMINATED, VMState.FAILED):
            raise exceptions.VMStateMismatch(f"VM {row.name} is {row.state}: nothing to forget")

    async def return_machine(self, name: str, *, actor: str) -> tuple[str, MachineStatus]:
        """Put a static pool's machine back in service, named as a machine or as the VM that
        reserved it; ``(pool, status)``. Not a static machine: ``MachineNotFound``; not in
        maintenance: ``Conflict`` (nothing changes)."""
        pool, backend, machine = await self._static_machine(name)
        status = await backend.return_machine(machine)  # Conflict when not in maintenance
        await self._ctl.operators.audit(actor, "return", "vm", machine, f"pool {pool}")
        return pool, status

    async def maintenance(self, name: str, reason: str, *, actor: str) -> tuple[str, MachineStatus]:
        """Take a static pool's machine out of service with ``reason`` (named as a machine or as
        the VM that reserved it; a reserved machine leaves service once its VM is released);
        ``(pool, status)``. Not a static machine: ``MachineNotFound``; an empty or over-long
        reason: ``InvalidInput`` (nothing changes)."""
        if not isinstance(reason, str) or not reason.strip() or len(reason) > REASON_LIMIT:
            raise exceptions.InvalidInput(
                f"a maintenance reason must be 1 to {REASON_LIMIT} characters of text"
            )
        pool, backend, machine = await self._static_machine(name)
        status = await backend.maintenance(machine, reason.strip())
        await self._ctl.operators.audit(actor, "maintenance", "vm", machine, reason.strip())
        return pool, status

    async def _static_machine(self, name: str) -> tuple[str, static.OperatesMachines, str]:
        """The pool, backend and machine name of ``name``: a static machine, or the VM holding
        one (``MachineNotFound`` for anything else)."""
        if not isinstance(name, str) or not name:
            raise exceptions.InvalidInput("a machine name must be a non-empty string")
        statics = {
            pool: g.backend
            for pool, g in self._ctl.backends().items()
            if isinstance(g.backend, static.OperatesMachines)
        }
        row = await self._ctl.store.pools.get_vm(name)
        if row is not None and row.pool not in statics:
            raise exceptions.MachineNotFound(
                f"VM {name} is in pool {row.pool}, whose backend has no machines to put in or "
                "out of maintenance: only static pools have them"
            )
        machine = name
        if row is not None:
            reserved = [s for s in await statics[row.pool].inventory() if s.vm == name]
            if not reserved:
                raise exceptions.MachineNotFound(f"VM {name} holds no machine of pool {row.pool}")
            machine = reserved[0].name
        pool, backend, _ = await static.find_machine(statics, machine)
        return pool, backend, machine
