"""Domain records (controller, task engine, lock manager) → the wire models of the API.

Pure functions, except that a ticket's address is looked up on its VM (the ticket record names the
VM, the client wants the address). A VM's name is never reused and its address never changes once
it is up, so :class:`Addresses` remembers them and a warm pool's tickets cost no lookup. This
module must not change anything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from corral import exceptions
from corral import wire as models
from corral.api.facade import ControllerFacade
from corral.pools import model

ADDRESS_LIMIT = 4096
"""VM addresses remembered by :class:`Addresses` (the least recently used are forgotten first)."""


class Addresses:
    """The known address of each VM name: VM names are unique and an address, once set, fixed."""

    def __init__(self, limit: int = ADDRESS_LIMIT) -> None:
        self._limit = limit
        self._known: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, name: str) -> str | None:
        """The remembered address of VM ``name``, if any."""
        address = self._known.get(name)
        if address is not None:
            self._known.move_to_end(name)
        return address

    def remember(self, name: str, address: str | None) -> None:
        """Note VM ``name``'s address (``None``, not up yet, is not remembered)."""
        if address is None:
            return
        self._known[name] = address
        self._known.move_to_end(name)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)


async def ticket(
    controller: ControllerFacade, record: model.Ticket, addresses: Addresses | None = None
) -> models.Ticket:
    """The wire form of a ticket, with the address of its VM while assigned."""
    address = None
    if record.vm is not None and record.state == model.TicketState.ASSIGNED:
        address = None if addresses is None else addresses.get(record.vm)
        if address is None:
            try:
                address = (await controller.get_vm(record.vm)).address
            except exceptions.VMNotFound:
                address = None
            if addresses is not None:
                addresses.remember(record.vm, address)
    return _ticket(record, address)


async def tickets(
    controller: ControllerFacade,
    records: Sequence[model.Ticket],
    addresses: Addresses | None = None,
) -> list[models.Ticket]:
    """The wire form of several tickets (one VM listing for all their addresses)."""
    found: dict[str, str | None] = {}
    if sum(r.state == model.TicketState.ASSIGNED for r in records) > 1:
        found = {v.name: v.address for v in await controller.list_vms()}
    elif records:
        return [await ticket(controller, r, addresses) for r in records]
    return [
        _ticket(r, found.get(r.vm) if r.state == model.TicketState.ASSIGNED and r.vm else None)
        for r in records
    ]


def _ticket(record: model.Ticket, address: str | None) -> models.Ticket:
    # the wire model reads the record's fields by name (one model, no hand-kept copy of it);
    # the address comes from the VM
    wire = models.Ticket.model_validate(record, from_attributes=True)
    return wire if address is None else wire.model_copy(update={"address": address})


def vm(record: model.VM) -> models.VM:
    """The wire form of a VM: the record's fields by name (its backend handle stays inside, the
    wire model has no such field)."""
    return models.VM.model_validate(record, from_attributes=True)


def pool(record: model.PoolStatus) -> models.PoolStatus:
    """The wire form of a pool's status."""
    s = record.stats
    return models.PoolStatus(
        name=record.name,
        backend=record.backend,
        tags=list(record.tags),
        max=record.max,
        max_starting=record.max_starting,
        min_ready=record.min_ready,
        description=record.description,
        mode=record.mode,
        vms=dict(record.vms),
        waiting_tickets=record.waiting_tickets,
        assigned_tickets=record.assigned_tickets,
        stats=models.PoolStats(
            spawn_p50=s.spawn_p50,
            spawn_p95=s.spawn_p95,
            spawn_attempts=s.spawn_attempts,
            spawn_failures=s.spawn_failures,
            spawn_success_rate=s.spawn_success_rate,
            wait_p50=s.wait_p50,
            wait_p95=s.wait_p95,
            terminate_failures=s.terminate_failures,
            livecheck_failures=s.livecheck_failures,
            recent_spawns=s.recent_spawns,
            recent_spawn_failures=s.recent_spawn_failures,
            last_spawn_error=s.last_spawn_error,
        ),
        info=dict(record.info),
        problem=record.problem,
    )
