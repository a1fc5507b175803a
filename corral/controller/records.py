"""Store rows to :mod:`corral.pools.model` values.

Pure conversions; this module must not query the store or call backends.
"""

from __future__ import annotations

from corral.pools.model import VM, Request, Ticket, TicketState, VMState
from corral.store.pools import TicketRow, VMRow


def vm(row: VMRow) -> VM:
    """The model value of a stored VM."""
    return VM(
        name=row.name,
        pool=row.pool,
        state=VMState(row.state),
        created_at=row.created_at,
        state_since=row.state_since,
        id_in_pool=row.id_in_pool,
        address=row.address,
        handle=row.handle,
        ticket=row.ticket,
        sandbox=row.sandbox,
        uses=row.uses,
        ready_at=row.ready_at,
        last_used_at=row.last_used_at,
        livecheck_failures=row.livecheck_failures,
        last_livecheck_at=row.last_livecheck_at,
        reason=row.reason,
        hold_until=row.hold_until,
        load=row.load,
        exclusive=row.exclusive,
        tickets=row.tickets,
        external=row.external,
    )


def ticket(row: TicketRow) -> Ticket:
    """The model value of a stored ticket."""
    return Ticket(
        id=row.id,
        owner=row.owner,
        state=TicketState(row.state),
        created_at=row.created_at,
        expires_at=row.expires_at,
        pool=row.pool,
        tags=row.tags,
        sandbox=row.sandbox,
        priority=row.priority,
        ttl=row.ttl,
        seq=row.seq,
        vm=row.vm,
        assigned_at=row.assigned_at,
        closed_at=row.closed_at,
        reason=row.reason,
        meta=dict(row.meta),
        exclusive=row.exclusive,
        count=row.count,
        vms=row.vms or ((row.vm,) if row.vm is not None else ()),
        requests=tuple(Request(pool, tags, count) for pool, tags, count in row.requests),
    )
