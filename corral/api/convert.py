"""Domain records (controller, task engine, lock manager) → the wire models of the API.

Pure functions, except that a ticket's address is looked up on its VM (the ticket record names the
VM, the client wants the address). A VM's name is never reused and its address never changes once
it is up, so :class:`Addresses` remembers them and a warm pool's tickets cost no lookup; a VM this
process's assignment just handed out (a new one for every ticket of a pool without reuse) is
taken as the assignment read it, not read again. This
module must not change anything.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from corral import exceptions
from corral import wire as models
from corral.api.facade import ControllerFacade
from corral.backends import connection
from corral.pools import model

ADDRESS_LIMIT = 4096
"""VM addresses remembered by :class:`Addresses` (the least recently used are forgotten first)."""


Reach = tuple[str, dict[str, str]]
"""A VM's address and its connection details (:mod:`corral.backends.connection`)."""


class Addresses:
    """The known address (and connection details) of each VM name: VM names are unique, and an
    address and the details, once the VM is up, fixed."""

    def __init__(self, limit: int = ADDRESS_LIMIT) -> None:
        self._limit = limit
        self._known: OrderedDict[str, Reach] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def get(self, name: str) -> Reach | None:
        """The remembered address and details of VM ``name``, if any."""
        reach = self._known.get(name)
        if reach is not None:
            self._known.move_to_end(name)
        return reach

    def remember(self, name: str, reach: Reach | None) -> None:
        """Note VM ``name``'s address and details (``None``, not up yet, is not remembered)."""
        if reach is None:
            return
        self._known[name] = reach
        self._known.move_to_end(name)
        while len(self._known) > self._limit:
            self._known.popitem(last=False)


async def ticket(
    controller: ControllerFacade, record: model.Ticket, addresses: Addresses | None = None
) -> models.Ticket:
    """The wire form of a ticket, with the address (and connection details) of its VMs while
    assigned."""
    reaches: list[Reach | None] = []
    for name in _held(record):
        reach = None if addresses is None else addresses.get(name)
        if reach is None:
            handed = controller.assigned_vm(name)  # a VM this process just handed out
            if handed is not None:
                reach = _reach(handed)
        if reach is None:
            try:
                reach = _reach(await controller.get_vm(name))
            except exceptions.VMNotFound:
                reach = None
            if addresses is not None:
                addresses.remember(name, reach)
        reaches.append(reach)
    return _ticket(record, reaches)


def _held(record: model.Ticket) -> tuple[str, ...]:
    """The VMs an assigned ticket holds (the first is ``vm``); none otherwise."""
    if record.state != model.TicketState.ASSIGNED or record.vm is None:
        return ()
    return record.vms or (record.vm,)


def _reach(vm: model.VM) -> Reach | None:
    """The VM's address and details (``None`` while it has no address)."""
    return None if vm.address is None else (vm.address, connection.from_handle(vm.handle))


async def tickets(
    controller: ControllerFacade,
    records: Sequence[model.Ticket],
    addresses: Addresses | None = None,
) -> list[models.Ticket]:
    """The wire form of several tickets (one VM listing for all their addresses)."""
    found: dict[str, Reach | None] = {}
    if sum(len(_held(r)) for r in records) > 1:
        found = {v.name: _reach(v) for v in await controller.list_vms()}
    elif records:
        return [await ticket(controller, r, addresses) for r in records]
    return [_ticket(r, [found.get(name) for name in _held(r)]) for r in records]


def _ticket(record: model.Ticket, reaches: Sequence[Reach | None]) -> models.Ticket:
    # the wire model reads the record's fields by name (one model, no hand-kept copy of it);
    # the addresses and connection details come from the VMs, the first VM's also as the
    # ticket's address and connection
    wire = models.Ticket.model_validate(record, from_attributes=True)
    if not reaches:
        return wire
    update: dict[str, object] = {"addresses": [None if r is None else r[0] for r in reaches]}
    if reaches[0] is not None:
        update.update(address=reaches[0][0], connection=reaches[0][1])
    return wire.model_copy(update=update)


def vm(record: model.VM) -> models.VM:
    """The wire form of a VM: the record's fields by name, plus the connection details kept in
    its backend handle (the handle itself stays inside: the wire model has no such field)."""
    wire = models.VM.model_validate(record, from_attributes=True)
    details = connection.from_handle(record.handle)
    return wire.model_copy(update={"connection": details}) if details else wire


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
            wasted_spawns=s.wasted_spawns,
            recent_spawns=s.recent_spawns,
            recent_spawn_failures=s.recent_spawn_failures,
            last_spawn_error=s.last_spawn_error,
        ),
        info=dict(record.info),
        problem=record.problem,
    )
