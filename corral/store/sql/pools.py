"""SQL pools repository: every query of the pools concept, named, with bound parameters only.

The two writes that must be atomic across processes are single units of work: :func:`assign` (a
conditional ``UPDATE`` of the ticket from ``waiting``, then of the VM from ``ready`` with no
ticket — states from :mod:`corral.pools.lifecycle` — both checked by row count; PostgreSQL's row
locks make the second writer re-check the condition and fail) and :func:`close_ticket`. Must not
be called from the event loop thread directly: everything goes through :class:`SqlExecutor`.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Row,
    bindparam,
    case,
    delete,
    exc,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from corral import exceptions
from corral.pools.lifecycle import (
    DEAD_VM_STATES,
    ENDED_TICKET_STATES,
    HOLD_WINS,
    PURGED_VM_STATES,
    TICKET_RULES,
    VM_RULES,
    TicketEvent,
    VMEvent,
    VMState,
    values,
    vm_sources,
    vm_target,
)
from corral.store.pools import (
    TICKET_COLUMNS,
    VM_COLUMNS,
    AllocationInputs,
    AssignWrite,
    AuditEntry,
    Closed,
    Decide,
    IdleUsedVM,
    InsertedAssigned,
    LeaseFence,
    LockFence,
    PoolSnapshot,
    TicketRow,
    VMRow,
    WriteFence,
    wanted_candidates,
    wanted_shared,
)
from corral.store.sql.executor import SqlExecutor
from corral.store.sql.prepared import Prepared
from corral.store.sql.schema_cluster import cluster_leases, lock_grants
from corral.store.sql.schema_pools import (
    audit,
    pool_counters,
    pool_info,
    pool_samples,
    pools,
    ticket_meta,
    tickets,
    vms,
)

_DEAD = values(DEAD_VM_STATES)
_PURGED = values(PURGED_VM_STATES)
_REGISTERED = str(vm_target(VMEvent.REGISTERED))
_ENDED = values(ENDED_TICKET_STATES)
# the states of the two atomic writes come from the lifecycle table
_VM_TAKE = VM_RULES[VMEvent.ASSIGNED]
_TICKET_TAKE = TICKET_RULES[TicketEvent.ASSIGNED]
_VM_FREE = vm_sources(VMEvent.FREED_TO_TERMINATE)
(_TICKET_UNTAKEN,) = _TICKET_TAKE.sources

log = logging.getLogger(__name__)


def _among(column: ColumnElement[str], states: Iterable[str]) -> ColumnElement[bool]:
    """``column`` is one of ``states``, as plain comparisons (prepared statements compile once:
    no expanding ``IN``)."""
    return or_(*(column == state for state in sorted(states)))


SAMPLE_LIMIT = 10_000
"""Samples kept per pool and kind (older ones are pruned now and then)."""

# --- the named queries ---------------------------------------------------------------------

SELECT_POOL_SEQ = select(pools.c.next_seq).where(pools.c.name == bindparam("b_pool"))
LOCK_POOL = SELECT_POOL_SEQ.with_for_update()
INSERT_POOL = insert(pools)
BUMP_POOL_SEQ = (
    update(pools).where(pools.c.name == bindparam("b_pool")).values(next_seq=pools.c.next_seq + 1)
)
SELECT_VM = select(vms).where(vms.c.name == bindparam("b_name"))
COUNT_VMS = (
    select(vms.c.state, func.count()).where(vms.c.pool == bindparam("b_pool")).group_by(vms.c.state)
)
READY_FRESH = (
    select(vms)
    .where(
        vms.c.pool == bindparam("b_pool"),
        _among(vms.c.state, _VM_TAKE.sources),
        vms.c.sandbox.is_(None),
        vms.c.ticket.is_(None),
        vms.c.uses == 0,
    )
    .order_by(vms.c.ready_at, vms.c.name)
    .limit(bindparam("b_limit"))
)
READY_SANDBOX = (
    select(vms)
    .where(
        vms.c.pool == bindparam("b_pool"),
        _among(vms.c.state, _VM_TAKE.sources),
        vms.c.sandbox == bindparam("b_sandbox"),
        vms.c.ticket.is_(None),
        vms.c.uses > 0,
    )
    .order_by(vms.c.ready_at, vms.c.name)
    .limit(bindparam("b_limit"))
)
IDLE_USED = (
    select(vms.c.name, vms.c.sandbox, vms.c.last_used_at)
    .where(
        vms.c.pool == bindparam("b_pool"),
        _among(vms.c.state, _VM_TAKE.sources),
        vms.c.ticket.is_(None),
        vms.c.uses > 0,
    )
    .order_by(vms.c.last_used_at, vms.c.name)
)
DELETE_DEAD_VM = delete(vms).where(vms.c.name == bindparam("b_name"), vms.c.state.in_(_DEAD))
ALL_ROWS = 2**62
"""The ``b_limit`` of an unbounded purge."""
PURGE_VMS = delete(vms).where(
    vms.c.name.in_(
        select(vms.c.name)
        .where(vms.c.state.in_(_PURGED), vms.c.state_since < bindparam("b_before"))
        .limit(bindparam("b_limit"))
    )
)
SELECT_ENDED_TICKETS = (
    select(tickets.c.id)
    .where(tickets.c.state.in_(_ENDED), tickets.c.closed_at < bindparam("b_before"))
    .limit(bindparam("b_limit"))
)
PURGE_TICKETS = delete(tickets).where(tickets.c.id.in_(bindparam("b_ids", expanding=True)))
PURGE_TICKET_META = delete(ticket_meta).where(
    ticket_meta.c.ticket_id.in_(bindparam("b_ids", expanding=True))
)
PURGE_AUDIT = delete(audit).where(
    audit.c.id.in_(
        select(audit.c.id)
        .where(audit.c.at < bindparam("b_before"))
        .order_by(audit.c.id)
        .limit(bindparam("b_limit"))
    )
)
INSERT_TICKET_META = insert(ticket_meta)
INSERT_TICKET = insert(tickets)
SELECT_TICKET = select(tickets).where(tickets.c.id == bindparam("b_id"))
# machines held: every assigned ticket counts its machines in the pool of its (first) VM, so a
# VM shared by several owners counts for each of them; a list ticket (``requests``) counts each
# of its VMs in that VM's pool (:func:`held_counts`)
HELD = (
    select(tickets.c.owner, vms.c.pool, func.sum(tickets.c.machines))
    .select_from(tickets.join(vms, vms.c.name == tickets.c.vm))
    .where(_among(tickets.c.state, [_TICKET_TAKE.target or ""]), tickets.c.requests.is_(None))
    .group_by(tickets.c.owner, vms.c.pool)
)
HELD_BY = (
    select(func.coalesce(func.sum(tickets.c.machines), 0))
    .select_from(tickets.join(vms, vms.c.name == tickets.c.vm))
    .where(
        tickets.c.owner == bindparam("b_owner"),
        _among(tickets.c.state, [_TICKET_TAKE.target or ""]),
        vms.c.pool == bindparam("b_pool"),
        tickets.c.requests.is_(None),
    )
)
HELD_LISTS = select(tickets.c.owner, tickets.c.vm, tickets.c.vms).where(
    _among(tickets.c.state, [_TICKET_TAKE.target or ""]), tickets.c.requests.is_not(None)
)
POOLS_OF_VMS = select(vms.c.name, vms.c.pool).where(
    vms.c.name.in_(bindparam("b_names", expanding=True))
)
TAKE_TICKET = (
    update(tickets)
    .where(tickets.c.id == bindparam("b_id"), _among(tickets.c.state, _TICKET_TAKE.sources))
    .values(
        state=_TICKET_TAKE.target,
        vm=bindparam("b_vm"),
        vms=bindparam("b_vms"),
        assigned_at=bindparam("b_now"),
    )
    .returning(
        tickets.c.owner,
        tickets.c.sandbox,
        tickets.c.exclusive,
        tickets.c.machines,
        tickets.c.requests,
    )
)
SELECT_VM_POOL = select(vms.c.pool).where(vms.c.name == bindparam("b_name"))
UNDO_TAKE_TICKET = (
    update(tickets)
    .where(tickets.c.id == bindparam("b_id"))
    .values(state=_TICKET_UNTAKEN, vm=None, vms=None, assigned_at=None)
)
TAKE_VM = (
    update(vms)
    .where(
        vms.c.name == bindparam("b_name"),
        _among(vms.c.state, _VM_TAKE.sources),
        vms.c.ticket.is_(None),
        vms.c.load == 0,
    )
    .values(
        state=_VM_TAKE.target,
        state_since=bindparam("b_now"),
        ticket=bindparam("b_ticket"),
        owner=bindparam("b_owner"),
        sandbox=bindparam("b_sandbox"),
        uses=vms.c.uses + 1,
        last_used_at=bindparam("b_now"),
        load=1,
        exclusive=bindparam("b_exclusive"),
        tickets=bindparam("b_ticket"),
    )
)


def _join_vm(sandbox: bool) -> Any:
    """One more ticket on a shared VM: conditional on its count (``b_load``), on room
    (``b_load`` < ``b_slots``, checked by the caller), on nobody holding it exclusively and on
    the sandbox it serves (``sandbox`` False: a VM serving tickets without one)."""
    return (
        update(vms)
        .where(
            vms.c.name == bindparam("b_name"),
            vms.c.state == _VM_TAKE.target,
            vms.c.load == bindparam("b_load"),
            vms.c.exclusive == False,  # noqa: E712 (SQL, not Python)
            vms.c.sandbox == bindparam("b_sandbox") if sandbox else vms.c.sandbox.is_(None),
        )
        .values(
            load=vms.c.load + 1,
            tickets=vms.c.tickets + " " + bindparam("b_ticket"),
            uses=vms.c.uses + 1,
            last_used_at=bindparam("b_now"),
        )
    )


JOIN_VM_SANDBOX = _join_vm(True)
JOIN_VM_NO_SANDBOX = _join_vm(False)
LEAVE_VM = (
    update(vms)
    .where(
        vms.c.name == bindparam("b_name"),
        vms.c.state == _VM_TAKE.target,
        vms.c.load == bindparam("b_load"),
        vms.c.tickets == bindparam("b_tickets"),
    )
    .values(
        load=vms.c.load - 1,
        tickets=bindparam("b_left"),
        ticket=bindparam("b_first"),
        owner=select(tickets.c.owner).where(tickets.c.id == bindparam("b_first")).scalar_subquery(),
    )
)
"""One ticket fewer on a VM others still share: conditional on its count and ticket list."""
SHARED_ROOM = (
    select(vms)
    .where(
        vms.c.pool == bindparam("b_pool"),
        vms.c.state == _VM_TAKE.target,
        vms.c.exclusive == False,  # noqa: E712 (SQL, not Python)
        vms.c.load > 0,
        vms.c.load < bindparam("b_slots"),
        or_(
            vms.c.sandbox == bindparam("b_sandbox"),
            vms.c.sandbox.is_(None) & bindparam("b_none"),
        ),
    )
    .order_by(vms.c.load.desc(), vms.c.name)
    .limit(bindparam("b_limit"))
)
"""Shared VMs of a pool with room for one more ticket of a sandbox, the fullest first."""
FREE_VM = (
    update(vms)
    .where(
        vms.c.name == bindparam("b_name"),
        vms.c.ticket == bindparam("b_ticket"),
        _among(vms.c.state, _VM_FREE),
        vms.c.load <= 1,
    )
    .values(
        load=0,
        exclusive=False,
        tickets="",
        # a VM marked to be held is held, whatever was asked (lifecycle.HOLD_WINS)
        state=case((vms.c.hold_until.is_not(None), HOLD_WINS.value), else_=bindparam("b_state")),
        state_since=bindparam("b_now"),
        ticket=None,
        owner=None,
        last_used_at=bindparam("b_now"),
    )
)
END_TICKET = (
    update(tickets)
    .where(
        tickets.c.id == bindparam("b_id"),
        tickets.c.state.in_(bindparam("b_expect", expanding=True)),
    )
    .values(state=bindparam("b_state"), closed_at=bindparam("b_now"), reason=bindparam("b_reason"))
)
SELECT_INFO = select(pool_info.c.key, pool_info.c.value).where(
    pool_info.c.pool == bindparam("b_pool")
)
DELETE_INFO = delete(pool_info).where(
    pool_info.c.pool == bindparam("b_pool"), pool_info.c.key == bindparam("b_key")
)
INSERT_SAMPLE = insert(pool_samples)
SELECT_SAMPLES = (
    select(pool_samples.c.value)
    .where(pool_samples.c.pool == bindparam("b_pool"), pool_samples.c.kind == bindparam("b_kind"))
    .order_by(pool_samples.c.id.desc())
    .limit(bindparam("b_limit"))
)
SAMPLE_CUTOFF = (
    select(pool_samples.c.id)
    .where(pool_samples.c.pool == bindparam("b_pool"), pool_samples.c.kind == bindparam("b_kind"))
    .order_by(pool_samples.c.id.desc())
    .offset(SAMPLE_LIMIT)
    .limit(1)
)
PRUNE_SAMPLES = delete(pool_samples).where(
    pool_samples.c.pool == bindparam("b_pool"),
    pool_samples.c.kind == bindparam("b_kind"),
    pool_samples.c.id <= bindparam("b_cutoff"),
)
SELECT_COUNTERS = select(pool_counters.c.name, pool_counters.c.value).where(
    pool_counters.c.pool == bindparam("b_pool")
)


_VM_NAMES = tuple(c.name for c in vms.c)
_TICKET_NAMES = tuple(c.name for c in tickets.c)


def _vm(r: Row[Any]) -> VMRow:
    return _vm_of(dict(r._mapping))


def _vm_t(values: tuple[Any, ...]) -> VMRow:
    """A VM from a raw row of ``select(vms)`` (the table's column order)."""
    return _vm_of(dict(zip(_VM_NAMES, values, strict=True)))


def _ticket(r: Row[Any]) -> TicketRow:
    return _ticket_of(dict(r._mapping))


def _ticket_t(values: tuple[Any, ...]) -> TicketRow:
    """A ticket from a raw row of ``select(tickets)`` (the table's column order)."""
    return _ticket_of(dict(zip(_TICKET_NAMES, values, strict=True)))


def _vm_of(m: Mapping[str, Any]) -> VMRow:
    return VMRow(
        name=m["name"],
        pool=m["pool"],
        state=m["state"],
        created_at=m["created_at"],
        state_since=m["state_since"],
        id_in_pool=m["id_in_pool"],
        address=m["address"],
        handle=m["handle"],
        ticket=m["ticket"],
        owner=m["owner"],
        sandbox=m["sandbox"],
        uses=m["uses"],
        ready_at=m["ready_at"],
        last_used_at=m["last_used_at"],
        livecheck_failures=m["livecheck_failures"],
        last_livecheck_at=m["last_livecheck_at"],
        reason=m["reason"],
        hold_until=m["hold_until"],
        external=bool(m["external"]),
        load=m["load"],
        exclusive=bool(m["exclusive"]),
        tickets=tuple(m["tickets"].split()),
    )


def _ticket_of(m: Mapping[str, Any]) -> TicketRow:
    return TicketRow(
        id=m["id"],
        owner=m["owner"],
        state=m["state"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        pool=m["pool"],
        tags=tuple(json.loads(m["tags"])),
        sandbox=m["sandbox"],
        priority=m["priority"],
        ttl=m["ttl"],
        seq=m["seq"],
        vm=m["vm"],
        assigned_at=m["assigned_at"],
        closed_at=m["closed_at"],
        reason=m["reason"],
        meta=_meta_of(m["meta"]),
        exclusive=bool(m["exclusive"]),
        count=m["machines"],
        vms=tuple(json.loads(m["vms"])) if m["vms"] else (),
        requests=_requests_of(m["requests"]),
    )


def _requests_of(text: str | None) -> tuple[tuple[str | None, tuple[str, ...], int], ...]:
    if not text:
        return ()
    return tuple((r["pool"], tuple(r["tags"]), int(r["count"])) for r in json.loads(text))


def _requests_text(row: TicketRow) -> str | None:
    if not row.requests:
        return None
    return json.dumps([{"pool": p, "tags": list(t), "count": n} for p, t, n in row.requests])


def held_counts(conn: Connection, owner: str | None = None) -> dict[tuple[str, str], int]:
    """Machines held per ``(owner, pool)`` (of one ``owner`` if given): :data:`HELD`, plus each
    VM of an assigned list ticket in its own pool."""
    if owner is None:
        held = {(r[0], r[1]): int(r[2]) for r in P_HELD.rows(conn, {})}
    else:
        held = {(r[0], r[1]): int(r[2]) for r in conn.execute(HELD.where(tickets.c.owner == owner))}
    lists = HELD_LISTS if owner is None else HELD_LISTS.where(tickets.c.owner == owner)
    rows = [(r[0], json.loads(r[2]) if r[2] else [r[1]]) for r in conn.execute(lists)]
    names = sorted({n for _, found in rows for n in found if n is not None})
    if not names:
        return held
    pools_of = {r[0]: r[1] for r in conn.execute(POOLS_OF_VMS, {"b_names": names})}
    for who, found in rows:
        for name in found:
            pool = pools_of.get(name)
            if pool is not None:
                held[(who, pool)] = held.get((who, pool), 0) + 1
    return held


def _meta_of(text: str | None) -> tuple[tuple[str, str], ...]:
    if not text:
        return ()
    return tuple(sorted(json.loads(text).items()))


# Hot paths (every ticket): compiled once, run on the driver's cursor (see prepared.py).
P_SELECT_VM = Prepared("select_vm", SELECT_VM)
P_SELECT_TICKET = Prepared("select_ticket", SELECT_TICKET)
P_INSERT_TICKET = Prepared(
    "insert_ticket",
    insert(tickets)
    .values({c.name: bindparam(f"v_{c.name}") for c in tickets.c if c.name != "seq"})
    .returning(tickets.c.seq),
)
P_READY_FRESH = Prepared("ready_fresh", READY_FRESH)
P_READY_SANDBOX = Prepared("ready_sandbox", READY_SANDBOX)
P_HELD = Prepared("held_counts", HELD)
P_COUNT_VMS = Prepared("count_vms", COUNT_VMS)
P_IDLE_USED = Prepared("idle_used", IDLE_USED)
P_SELECT_VM_POOL = Prepared("select_vm_pool", SELECT_VM_POOL)
P_LOCK_POOL = Prepared("lock_pool", LOCK_POOL)
P_TAKE_TICKET = Prepared("take_ticket", TAKE_TICKET)
P_HELD_BY = Prepared("held_by", HELD_BY)
P_UNDO_TAKE_TICKET = Prepared("undo_take_ticket", UNDO_TAKE_TICKET)
P_TAKE_VM = Prepared("take_vm", TAKE_VM)
P_FREE_VM = Prepared("free_vm", FREE_VM)
_UPDATE_VM: dict[tuple[tuple[str, ...], int | None, str], Prepared] = {}
_END_TICKET: dict[tuple[int, str], Prepared] = {}

# --- fencing (issue 11): a write on behalf of a lease or a lock, checked in its own statement --

LEASE_HELD = (
    # FOR SHARE: a host taking the lease (an UPDATE of this row) waits for this transaction,
    # so the write commits under the epoch it was checked against
    select(cluster_leases.c.name)
    .where(
        cluster_leases.c.name == bindparam("f_name"),
        cluster_leases.c.session == bindparam("f_session"),
        cluster_leases.c.epoch == bindparam("f_epoch"),
        cluster_leases.c.expires_at >= func.corral_lock_now(),
    )
    .with_for_update(read=True)
)
GRANT_HELD = (
    # FOR SHARE: the lock table cannot free the grant (a release, the reaper of a lapsed host)
    # before this transaction ends, so no new holder acts on the VM before the write commits
    select(lock_grants.c.key)
    .where(lock_grants.c.key == bindparam("f_key"), lock_grants.c.token == bindparam("f_token"))
    .with_for_update(read=True)
)
P_LEASE_HELD = Prepared("lease_held", LEASE_HELD)
P_GRANT_HELD = Prepared("grant_held", GRANT_HELD)
NO_FENCE, LEASE, LOCK = "", "lease", "lock"


def _fence_of(conn: Connection, fence: WriteFence | None) -> WriteFence | None:
    """The fence to check: only PostgreSQL has cluster leases and a lock table (the other
    stores are single-host and accept the fence without checking it)."""
    return fence if fence is not None and conn.dialect.name == "postgresql" else None


def _fence_kind(fence: WriteFence | None) -> str:
    if fence is None:
        return NO_FENCE
    return LEASE if isinstance(fence, LeaseFence) else LOCK


def _fence_clause(kind: str) -> ColumnElement[bool]:
    """The condition a fenced statement adds to its ``WHERE``: the lease or grant still held."""
    return exists(LEASE_HELD if kind == LEASE else GRANT_HELD)


def _fence_params(fence: WriteFence | None) -> dict[str, Any]:
    if isinstance(fence, LeaseFence):
        return {"f_name": fence.name, "f_session": fence.session, "f_epoch": fence.epoch}
    if isinstance(fence, LockFence):
        return {"f_key": fence.key, "f_token": fence.token}
    return {}


def check_fence(conn: Connection, fence: WriteFence, what: str) -> None:
    """After a fenced statement matched nothing: was it the fence? Then log and refuse
    (``StaleEpoch`` for a lease, ``StaleToken`` for a lock); otherwise return (the row's own
    condition failed). Only on this failure path: a write that succeeds costs no extra round
    trip."""
    params = _fence_params(fence)
    if isinstance(fence, LeaseFence):
        if P_LEASE_HELD.exists(conn, params):
            return
        log.error("cluster: refused %s: %s lapsed or moved", what, fence)
        raise exceptions.StaleEpoch(
            f"{what}: lease {fence.name} epoch {fence.epoch} is no longer this host's"
        )
    if P_GRANT_HELD.exists(conn, params):
        return
    log.error("cluster: refused %s: %s is no longer granted", what, fence)
    raise exceptions.StaleToken(f"{what}: lock {fence.key} token {fence.token} is no longer held")


def _end_ticket_statement(expect: int, kind: str = NO_FENCE) -> Prepared:
    """:data:`END_TICKET` for ``expect`` expected states (and a fence kind), one compiled
    statement per shape."""
    found = _END_TICKET.get((expect, kind))
    if found is None:
        query = (
            update(tickets)
            .where(
                tickets.c.id == bindparam("b_id"),
                tickets.c.state.in_([bindparam(f"b_e{i}") for i in range(expect)]),
            )
            .values(
                state=bindparam("b_state"),
                closed_at=bindparam("b_now"),
                reason=bindparam("b_reason"),
            )
        )
        if kind:
            query = query.where(_fence_clause(kind))
        found = _END_TICKET.setdefault((expect, kind), Prepared(f"end_ticket{expect}{kind}", query))
    return found


def _update_vm_statement(
    columns: tuple[str, ...], expect: int | None, kind: str = NO_FENCE
) -> Prepared:
    """``UPDATE vms SET <columns> WHERE name = ? [AND state IN (<expect> states)] [AND <the
    fence holds>] RETURNING *``, one compiled statement per shape."""
    key = (columns, expect, kind)
    found = _UPDATE_VM.get(key)
    if found is None:
        query = update(vms).where(vms.c.name == bindparam("b_name"))
        if expect is not None:
            query = query.where(vms.c.state.in_([bindparam(f"b_e{i}") for i in range(expect)]))
        if kind:
            query = query.where(_fence_clause(kind))
        query = query.values({c: bindparam(f"v_{c}") for c in columns}).returning(*vms.c)
        found = _UPDATE_VM.setdefault(key, Prepared(f"update_vm{key}", query))
    return found


def _upsert(
    conn: Connection, table: Any, values: dict[str, Any], keys: list[str], set_: dict[str, Any]
) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(**values)
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=set_))


# --- VMs -----------------------------------------------------------------------------------


_VM_INSERTED = (
    "name",
    "pool",
    "state",
    "created_at",
    "state_since",
    "id_in_pool",
    "uses",
    "livecheck_failures",
)
P_INSERT_VM = Prepared(
    "insert_vm", insert(vms).values({name: bindparam(f"v_{name}") for name in _VM_INSERTED})
)
P_LEASE_LIVE = Prepared(
    "lease_live",
    # FOR SHARE: a host taking the lease (an UPDATE of this row) waits for this transaction,
    # so the VM row commits under the epoch it was checked against (issue 11 fencing)
    select(cluster_leases.c.name)
    .where(
        cluster_leases.c.name == bindparam("b_name"),
        cluster_leases.c.session == bindparam("b_session"),
        cluster_leases.c.epoch == bindparam("b_epoch"),
        cluster_leases.c.expires_at >= func.corral_lock_now(),
    )
    .with_for_update(read=True),
)
P_ALIVE_IDS = Prepared(
    "alive_ids",
    select(vms.c.id_in_pool).where(
        vms.c.pool == bindparam("b_pool"), *(vms.c.state != dead for dead in _DEAD)
    ),
)
_BUMP_SEQ: dict[str, Prepared] = {}


def _bump_seq_statement(dialect_name: str) -> Prepared:
    """Upsert the pool's row, adding one to ``next_seq``, returning it (one per dialect)."""
    found = _BUMP_SEQ.get(dialect_name)
    if found is None:
        dialect: Any = postgresql if dialect_name == "postgresql" else sqlite
        query = (
            dialect.insert(pools)
            .values(name=bindparam("b_pool"), next_seq=1)
            .on_conflict_do_update(index_elements=["name"], set_={"next_seq": pools.c.next_seq + 1})
            .returning(pools.c.next_seq)
        )
        found = _BUMP_SEQ.setdefault(dialect_name, Prepared(f"bump_seq_{dialect_name}", query))
    return found


def create_vm(
    conn: Connection, pool: str, state: str, now: float, fence: LeaseFence | None = None
) -> VMRow:
    """Take the pool's next number and the smallest free ``id_in_pool``; insert the VM.

    Every spawn runs this: compiled statements on the driver's cursor (see prepared.py). With
    ``fence`` on PostgreSQL, first the lease check (:data:`P_LEASE_LIVE`).
    """
    if fence is not None and conn.dialect.name == "postgresql":
        params = {"b_name": fence.name, "b_session": fence.session, "b_epoch": fence.epoch}
        if not P_LEASE_LIVE.exists(conn, params):
            log.error("cluster: refused a new VM of pool %s: %s lapsed or moved", pool, fence)
            raise exceptions.StaleEpoch(
                f"pool {pool}: lease {fence.name} epoch {fence.epoch} is no longer this host's"
            )
    seq = _bump_seq_statement(conn.dialect.name).rows(conn, {"b_pool": pool})[0][0]
    used = {r[0] for r in P_ALIVE_IDS.rows(conn, {"b_pool": pool})}
    id_in_pool = next(i for i in range(len(used) + 1) if i not in used)
    row = VMRow(
        name=f"{pool}-{seq:06d}",
        pool=pool,
        state=state,
        created_at=now,
        state_since=now,
        id_in_pool=id_in_pool,
    )
    values = (row.name, pool, state, now, now, id_in_pool, 0, 0)
    P_INSERT_VM.write(conn, {f"v_{k}": v for k, v in zip(_VM_INSERTED, values, strict=True)})
    return row


def register_vm(
    conn: Connection, pool: str, name: str, address: str, handle: str, now: float
) -> VMRow:
    """Insert a machine made elsewhere as a ready, external VM (``Conflict`` if the name is
    recorded); its ``id_in_pool`` as :func:`create_vm` takes it, the pool's counter untouched."""
    if P_SELECT_VM.rows(conn, {"b_name": name}):
        raise exceptions.Conflict(f"a VM named {name!r} is already recorded")
    used = {r[0] for r in P_ALIVE_IDS.rows(conn, {"b_pool": pool})}
    row = VMRow(
        name=name,
        pool=pool,
        state=_REGISTERED,
        created_at=now,
        state_since=now,
        id_in_pool=next(i for i in range(len(used) + 1) if i not in used),
        address=address,
        handle=handle,
        ready_at=now,
        external=True,
    )
    values = {
        c: getattr(row, c) for c in (*_VM_INSERTED, "address", "handle", "ready_at", "external")
    }
    try:
        conn.execute(insert(vms).values(values))
    except exc.IntegrityError as error:  # registered by another host meanwhile
        raise exceptions.Conflict(f"a VM named {name!r} is already recorded") from error
    return row


def list_vms(
    conn: Connection,
    pool: str | None,
    states: Sequence[str] | None,
    address: str | None,
    ticket: str | None,
) -> list[VMRow]:
    """VMs matching the filters, oldest first."""
    query = select(vms)
    if pool is not None:
        query = query.where(vms.c.pool == pool)
    if states is not None:
        query = query.where(vms.c.state.in_(list(states)))
    if address is not None:
        query = query.where(vms.c.address == address)
    if ticket is not None:
        query = query.where(
            or_(vms.c.ticket == ticket, (" " + vms.c.tickets + " ").contains(f" {ticket} "))
        )
    query = query.order_by(vms.c.created_at, vms.c.name)
    return [_vm(r) for r in conn.execute(query)]


def update_vm(
    conn: Connection,
    name: str,
    expect: Sequence[str] | None,
    changes: Mapping[str, object],
    fence: WriteFence | None = None,
) -> VMRow | None:
    """Conditional update of one VM; the new row or ``None``. With ``fence`` (PostgreSQL), the
    fence is one more condition of the same statement (:func:`check_fence` on a miss)."""
    if expect is not None and not expect:
        return None  # no state is expected: nothing can match
    fenced = _fence_of(conn, fence)
    if changes:
        columns = tuple(sorted(changes))
        kind = _fence_kind(fenced)
        statement = _update_vm_statement(columns, None if expect is None else len(expect), kind)
        params: dict[str, Any] = {f"v_{c}": changes[c] for c in columns}
        params["b_name"] = name
        for i, state in enumerate(expect or ()):
            params[f"b_e{i}"] = state
        params.update(_fence_params(fenced))
        # one statement: the new row comes back with the update (SQLite >= 3.35, PostgreSQL)
        updated = statement.rows(conn, params)
        if updated:
            return _vm_t(updated[0])
        if fenced is not None:
            check_fence(conn, fenced, f"a write of VM {name}")
        return None
    if fenced is not None:
        check_fence(conn, fenced, f"a write of VM {name}")
    rows = P_SELECT_VM.rows(conn, {"b_name": name})
    if not rows:
        return None
    row = _vm_t(rows[0])
    if expect is not None and row.state not in expect:
        return None
    return row


# --- tickets -------------------------------------------------------------------------------


def insert_ticket(conn: Connection, row: TicketRow) -> TicketRow:
    """Insert a ticket; the store numbers it (one statement: the number comes back with it)."""
    values = {
        "v_id": row.id,
        "v_owner": row.owner,
        "v_state": row.state,
        "v_created_at": row.created_at,
        "v_expires_at": row.expires_at,
        "v_pool": row.pool,
        "v_tags": json.dumps(list(row.tags)),
        "v_sandbox": row.sandbox,
        "v_priority": row.priority,
        "v_ttl": row.ttl,
        "v_vm": row.vm,
        "v_assigned_at": row.assigned_at,
        "v_closed_at": row.closed_at,
        "v_reason": row.reason,
        "v_meta": json.dumps(dict(row.meta), sort_keys=True) if row.meta else None,
        "v_exclusive": row.exclusive,
        "v_machines": row.count,
        "v_vms": json.dumps(list(row.vms)) if row.vms else None,
        "v_requests": _requests_text(row),
    }
    duplicate: tuple[type[BaseException], ...] = (exc.IntegrityError,)
    if conn.dialect.dbapi is not None:  # the raw cursor raises the driver's own error
        duplicate = (exc.IntegrityError, conn.dialect.dbapi.IntegrityError)
    try:
        seq = P_INSERT_TICKET.rows(conn, values)[0][0]
    except duplicate as error:
        raise exceptions.Conflict(f"ticket {row.id} already exists") from error
    if row.meta:
        conn.execute(
            INSERT_TICKET_META, [{"ticket_id": row.id, "key": k, "value": v} for k, v in row.meta]
        )
    return dataclasses.replace(row, seq=seq, tags=tuple(row.tags))


def list_tickets(
    conn: Connection,
    owner: str | None,
    states: Sequence[str] | None,
    expired_before: float | None,
    meta: Mapping[str, str] | None = None,
) -> list[TicketRow]:
    """Tickets matching the filters, by priority then age."""
    query = select(tickets)
    for key, value in sorted((meta or {}).items()):
        query = query.where(
            tickets.c.id.in_(
                select(ticket_meta.c.ticket_id).where(
                    ticket_meta.c.key == key, ticket_meta.c.value == value
                )
            )
        )
    if owner is not None:
        query = query.where(tickets.c.owner == owner)
    if states is not None:
        query = query.where(tickets.c.state.in_(list(states)))
    if expired_before is not None:
        query = query.where(tickets.c.expires_at < expired_before)
    query = query.order_by(tickets.c.priority.desc(), tickets.c.seq)
    return [_ticket(r) for r in conn.execute(query)]


def update_ticket(
    conn: Connection, ticket_id: str, expect: Sequence[str], changes: Mapping[str, object]
) -> TicketRow | None:
    """Conditional update of one ticket; the new row or ``None``."""
    if changes:
        query = (
            update(tickets)
            .where(tickets.c.id == ticket_id, tickets.c.state.in_(list(expect)))
            .values(**changes)
            .returning(*tickets.c)
        )
        updated = conn.execute(query).first()
        return None if updated is None else _ticket(updated)
    row = conn.execute(SELECT_TICKET, {"b_id": ticket_id}).first()
    if row is None or row._mapping["state"] not in expect:
        return None
    return _ticket(row)


def assign(
    conn: Connection, ticket_id: str, vm_name: str, now: float, max_per_owner: int | None
) -> bool:
    """The atomic conditional assignment of one free VM (see the module docstring)."""
    return assign_many(conn, ticket_id, [(vm_name, 0)], now, 1, max_per_owner)


def _lock_vms(conn: Connection, names: Sequence[str]) -> dict[str, VMRow] | None:
    """The VMs ``names``, row-locked in name order (two multi-machine assignments lock their
    common VMs in the same order, so they cannot deadlock); ``None`` if one is missing."""
    found: dict[str, VMRow] = {}
    for name in sorted(names):
        rows = conn.execute(SELECT_VM.with_for_update(), {"b_name": name}).all()
        if not rows:
            return None
        found[name] = _vm(rows[0])
    return found


def _all_takeable(
    conn: Connection,
    chosen: Sequence[tuple[str, int]],
    sandbox: str | None,
    exclusive: bool,
    slots: int,
    several_pools: bool = False,
) -> bool:
    """Several VMs, or a join: every VM checked under its row lock first, so that the writes
    that follow cannot fail half-way (a failed write cannot be undone without the old values).
    ``several_pools``: a list ticket's VMs, which may be of different pools."""
    rows = _lock_vms(conn, [name for name, _ in chosen])
    if rows is None or (not several_pools and len({r.pool for r in rows.values()}) != 1):
        return False
    return all(_may_take(rows[n], load, sandbox, exclusive, slots) for n, load in chosen)


def _may_take(vm: VMRow, load: int, sandbox: str | None, exclusive: bool, slots: int) -> bool:
    if vm.load != load or vm.exclusive:
        return False
    if load == 0:
        return vm.state in _VM_TAKE.sources and vm.ticket is None
    return (
        vm.state == _VM_TAKE.target
        and not exclusive
        and vm.sandbox == sandbox
        and load + 1 <= slots
    )


def assign_many(
    conn: Connection,
    ticket_id: str,
    chosen: Sequence[tuple[str, int]],
    now: float,
    slots: int,
    max_per_owner: int | None,
    owner_limits: Mapping[str, int] | None = None,
) -> bool:
    """The atomic conditional assignment of one or several VMs (see the module docstring)."""
    names = [name for name, _ in chosen]
    if not chosen or len(set(names)) != len(names):
        return False
    first = names[0]
    pool = None
    _lock_pools(conn, owner_limits or {})
    if max_per_owner is not None:
        # Serialise this pool's assignments (row lock on PostgreSQL; SQLite has one writer) so
        # that two processes cannot both see the owner below the limit. The pool row is locked
        # before the ticket row, in every transaction, so the locks cannot deadlock.
        found = P_SELECT_VM_POOL.rows(conn, {"b_name": first})
        if not found:
            return False
        pool = found[0][0]
        P_LOCK_POOL.rows(conn, {"b_pool": pool})
    params_ticket = {
        "b_id": ticket_id,
        "b_vm": first,
        "b_vms": json.dumps(names) if len(names) > 1 else None,
        "b_now": now,
    }
    taken = P_TAKE_TICKET.rows(conn, params_ticket)
    if not taken:
        return False
    owner, sandbox, exclusive = taken[0][0], taken[0][1], bool(taken[0][2])
    listed = taken[0][4] is not None
    if taken[0][3] != len(chosen):  # a multi-machine ticket gets all its machines or none
        P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
        return False
    if listed:
        return _assign_listed(
            conn, ticket_id, chosen, (owner, sandbox, exclusive), now, slots, owner_limits
        )
    if pool is not None and max_per_owner is not None:
        # the ticket counts itself now (it is assigned to its first VM)
        held = P_HELD_BY.rows(conn, {"b_pool": pool, "b_owner": owner})[0][0]
        if held > max_per_owner:
            P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
            return False
    if (len(chosen) > 1 or chosen[0][1] > 0) and not _all_takeable(
        conn, chosen, sandbox, exclusive, slots
    ):
        P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
        return False
    for name, load in chosen:
        done = _take_vm(conn, name, load, ticket_id, owner, sandbox, exclusive, now)
        if done != 1:
            if len(chosen) > 1:  # cannot happen: every row was checked under its lock
                raise exceptions.StoreError(f"VM {name} changed under its row lock")
            # Same transaction: restoring the ticket's previous values is the same as never
            # having written them (nobody else can have seen them).
            P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
            return False
    return True


def _lock_pools(conn: Connection, limited: Iterable[str]) -> None:
    """A list ticket: serialise the assignments of each pool with a ``max_per_owner``, in name
    order and before the ticket row (as :func:`assign_many` does for one pool), so that no two
    processes both see the owner below a limit and the locks cannot deadlock."""
    for pool in sorted(limited):
        P_LOCK_POOL.rows(conn, {"b_pool": pool})


def _assign_listed(
    conn: Connection,
    ticket_id: str,
    chosen: Sequence[tuple[str, int]],
    taker: tuple[str, str | None, bool],
    now: float,
    slots: int,
    owner_limits: Mapping[str, int] | None,
) -> bool:
    """The rest of :func:`assign_many` for a list ticket (its row already taken): free VMs only
    (of any pools), checked under their row locks, and within every limited pool's
    ``max_per_owner`` once it counts itself; the ticket row is restored on failure."""
    owner, sandbox, exclusive = taker
    if any(load for _, load in chosen) or not _all_takeable(
        conn, chosen, sandbox, exclusive, slots, several_pools=True
    ):
        P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
        return False
    held = held_counts(conn, owner)
    if any(held.get((owner, p), 0) > n for p, n in (owner_limits or {}).items()):
        P_UNDO_TAKE_TICKET.write(conn, {"b_id": ticket_id})
        return False
    for name, load in chosen:
        if _take_vm(conn, name, load, ticket_id, owner, sandbox, exclusive, now) != 1:
            raise exceptions.StoreError(f"VM {name} changed under its row lock")
    return True


def _take_vm(
    conn: Connection,
    name: str,
    load: int,
    ticket_id: str,
    owner: str,
    sandbox: str | None,
    exclusive: bool,
    now: float,
) -> int:
    """Write one VM of an assignment (a free VM taken, or a shared one joined); the row count."""
    if load == 0:
        params: dict[str, Any] = {
            "b_name": name,
            "b_now": now,
            "b_ticket": ticket_id,
            "b_owner": owner,
            "b_sandbox": sandbox,
            "b_exclusive": exclusive,
        }
        return P_TAKE_VM.write(conn, params)
    statement = JOIN_VM_NO_SANDBOX if sandbox is None else JOIN_VM_SANDBOX
    params = {"b_name": name, "b_load": load, "b_sandbox": sandbox, "b_ticket": ticket_id}
    params["b_now"] = now
    return int(conn.execute(statement, params).rowcount)


def _leave(conn: Connection, name: str, ticket_id: str) -> None:
    """Take ``ticket_id`` off a VM other tickets still share (a conditional update on its count
    and ticket list, read again if another ticket came or went meanwhile)."""
    for _ in range(8):
        rows = P_SELECT_VM.rows(conn, {"b_name": name})
        if not rows:
            return
        vm = _vm_t(rows[0])
        if ticket_id not in vm.tickets or vm.load <= 1 or vm.state != _VM_TAKE.target:
            return
        left = [t for t in vm.tickets if t != ticket_id]
        params = {
            "b_name": name,
            "b_load": vm.load,
            "b_tickets": " ".join(vm.tickets),
            "b_left": " ".join(left),
            "b_first": left[0],
        }
        if conn.execute(LEAVE_VM, params).rowcount == 1:
            return
    raise exceptions.Conflict(f"VM {name} keeps changing; try again")


def close_ticket(
    conn: Connection,
    ticket_id: str,
    expect: Sequence[str],
    state: str,
    vm_state: str | None,
    now: float,
    reason: str | None,
    fence: LeaseFence | None = None,
) -> Closed | None:
    """End a ticket and free its VM in one transaction; with ``fence`` (PostgreSQL), the
    ticket's end is conditional on the leader's lease in the same statement."""
    if not expect:
        return None  # no state is expected: nothing can match
    fenced = _fence_of(conn, fence)
    params: dict[str, Any] = {"b_id": ticket_id, "b_state": state, "b_now": now, "b_reason": reason}
    for i, expected in enumerate(expect):
        params[f"b_e{i}"] = expected
    params.update(_fence_params(fenced))
    statement = _end_ticket_statement(len(expect), _fence_kind(fenced))
    if statement.write(conn, params) != 1:
        if fenced is not None:
            check_fence(conn, fenced, f"the end of ticket {ticket_id}")
        return None
    ticket = _ticket_t(P_SELECT_TICKET.rows(conn, {"b_id": ticket_id})[0])
    vm: VMRow | None = None
    others: list[VMRow] = []
    for name in ticket.vms or ((ticket.vm,) if ticket.vm is not None else ()):
        freed = P_FREE_VM.write(
            conn,
            {
                "b_name": name,
                "b_ticket": ticket_id,
                "b_state": vm_state or VMState.IN_USE.value,
                "b_now": now,
            },
        )
        if freed == 1:
            row = _vm_t(P_SELECT_VM.rows(conn, {"b_name": name})[0])
            if name == ticket.vm:
                vm = row
            else:
                others.append(row)
        else:
            _leave(conn, name, ticket_id)
    return Closed(ticket=ticket, vm=vm, others=tuple(others))


# --- info and statistics -------------------------------------------------------------------


def set_info(conn: Connection, pool: str, key: str, value: str | None) -> None:
    """Upsert or delete one info pair."""
    if value is None:
        conn.execute(DELETE_INFO, {"b_pool": pool, "b_key": key})
    else:
        _upsert(
            conn,
            pool_info,
            {"pool": pool, "key": key, "value": value},
            ["pool", "key"],
            {"value": value},
        )


def add_sample(conn: Connection, pool: str, kind: str, value: float, at: float) -> None:
    """Insert a sample; every so often prune the ones beyond :data:`SAMPLE_LIMIT`."""
    new_id = conn.execute(
        INSERT_SAMPLE, {"pool": pool, "kind": kind, "value": value, "at": at}
    ).inserted_primary_key
    if new_id is not None and new_id[0] % 1000 == 0:
        cutoff = conn.execute(SAMPLE_CUTOFF, {"b_pool": pool, "b_kind": kind}).scalar()
        if cutoff is not None:
            conn.execute(PRUNE_SAMPLES, {"b_pool": pool, "b_kind": kind, "b_cutoff": cutoff})


def bump(conn: Connection, pool: str, counter: str, by: int) -> None:
    """Add to a counter, creating it at ``by``."""
    _upsert(
        conn,
        pool_counters,
        {"pool": pool, "name": counter, "value": by},
        ["pool", "name"],
        {"value": pool_counters.c.value + by},
    )


WAITING = (
    select(tickets)
    .where(_among(tickets.c.state, _TICKET_TAKE.sources))
    .order_by(tickets.c.priority.desc(), tickets.c.seq)
)
P_WAITING = Prepared("waiting_tickets", WAITING)


def insert_ticket_assigning(
    conn: Connection,
    row: TicketRow,
    pools: Mapping[str, frozenset[str]],
    shared: Mapping[str, int] | None,
    decide: Decide,
) -> InsertedAssigned:
    """Insert a ticket, read the allocation inputs and make the decided writes, in one
    transaction (see :meth:`SqlPoolsRepository.insert_ticket_assigning`)."""
    stored = insert_ticket(conn, row)
    inputs = allocation_inputs(conn, pools, shared)
    writes = tuple(decide(inputs))
    done = tuple(_assign_write(conn, write) for write in writes)
    return InsertedAssigned(stored, inputs, writes, done)


def _assign_write(conn: Connection, write: AssignWrite) -> bool:
    return assign_many(
        conn,
        write.ticket,
        write.vms,
        write.now,
        write.slots,
        write.max_per_owner,
        dict(write.owner_limits or {}),
    )


def allocation_inputs(
    conn: Connection, pools: Mapping[str, frozenset[str]], shared: Mapping[str, int] | None = None
) -> AllocationInputs:
    """The waiting tickets, held counts and bounded ready candidates, in one transaction."""
    waiting = [_ticket_t(r) for r in P_WAITING.rows(conn, {})]
    if not waiting:
        return AllocationInputs(waiting=(), held={}, ready=())
    ready: list[VMRow] = []
    for (pool, sandbox), limit in wanted_candidates(waiting, pools).items():
        if sandbox is None:
            found = P_READY_FRESH.rows(conn, {"b_pool": pool, "b_limit": limit})
        else:
            params = {"b_pool": pool, "b_sandbox": sandbox, "b_limit": limit}
            found = P_READY_SANDBOX.rows(conn, params)
        ready.extend(_vm_t(r) for r in found)
    for (pool, sandbox), limit in wanted_shared(waiting, pools, shared or {}).items():
        params_shared = {
            "b_pool": pool,
            "b_slots": (shared or {})[pool],
            "b_sandbox": sandbox,
            "b_none": sandbox is None,
            "b_limit": limit,
        }
        ready.extend(_vm(r) for r in conn.execute(SHARED_ROOM, params_shared))
    held = held_counts(conn)
    return AllocationInputs(waiting=tuple(waiting), held=held, ready=tuple(ready))


def pool_snapshot(
    conn: Connection, pool: str, unless: Callable[[Mapping[str, int]], bool] | None = None
) -> PoolSnapshot:
    """Counts, waiting tickets and held counts, in one transaction (only the counts when
    ``unless(counts)``)."""
    counts = {r[0]: r[1] for r in P_COUNT_VMS.rows(conn, {"b_pool": pool})}
    if unless is not None and unless(counts):
        return PoolSnapshot(counts=counts, waiting=(), held={}, blocked=True)
    return PoolSnapshot(
        counts=counts,
        waiting=tuple(_ticket_t(r) for r in P_WAITING.rows(conn, {})),
        held=held_counts(conn),
        idle_used=tuple(
            IdleUsedVM(r[0], r[1], r[2]) for r in P_IDLE_USED.rows(conn, {"b_pool": pool})
        ),
    )


def record_stats(
    conn: Connection,
    samples: Sequence[tuple[str, str, float, float]],
    counts: Mapping[tuple[str, str], int],
) -> None:
    """Add samples and bump counters."""
    for pool, kind, value, at in samples:
        add_sample(conn, pool, kind, value, at)
    for (pool, counter), by in counts.items():
        bump(conn, pool, counter, by)


class SqlPoolsRepository:
    """The pools repository over SQLite or PostgreSQL (see :mod:`corral.store.pools`)."""

    def __init__(self, executor: SqlExecutor) -> None:
        self._executor = executor

    async def create_vm(
        self, pool: str, *, state: str, now: float, fence: LeaseFence | None = None
    ) -> VMRow:
        """See :meth:`corral.store.pools.PoolsRepository.create_vm`."""
        return await self._executor.run(lambda conn: create_vm(conn, pool, state, now, fence))

    async def register_vm(
        self, pool: str, name: str, *, address: str, handle: str, now: float
    ) -> VMRow:
        """See :meth:`corral.store.pools.PoolsRepository.register_vm`."""
        return await self._executor.run(
            lambda conn: register_vm(conn, pool, name, address, handle, now)
        )

    async def vms_issued(self, pool: str) -> int:
        """See :meth:`corral.store.pools.PoolsRepository.vms_issued`."""

        def run(conn: Connection) -> int:
            found = conn.execute(SELECT_POOL_SEQ, {"b_pool": pool}).scalar()
            return int(found) if found is not None else 0

        return await self._executor.read(run)

    async def get_vm(self, name: str) -> VMRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.get_vm`."""

        def run(conn: Connection) -> VMRow | None:
            rows = P_SELECT_VM.rows(conn, {"b_name": name})
            return _vm_t(rows[0]) if rows else None

        return await self._executor.read(run)

    async def list_vms(
        self,
        *,
        pool: str | None = None,
        states: Sequence[str] | None = None,
        address: str | None = None,
        ticket: str | None = None,
    ) -> builtins.list[VMRow]:
        """See :meth:`corral.store.pools.PoolsRepository.list_vms`."""
        return await self._executor.read(lambda conn: list_vms(conn, pool, states, address, ticket))

    async def count_vms(self, pool: str) -> dict[str, int]:
        """See :meth:`corral.store.pools.PoolsRepository.count_vms`."""
        return await self._executor.read(
            lambda conn: {r[0]: r[1] for r in conn.execute(COUNT_VMS, {"b_pool": pool})}
        )

    async def ready_vms(
        self, pool: str, *, sandbox: str | None, limit: int
    ) -> builtins.list[VMRow]:
        """See :meth:`corral.store.pools.PoolsRepository.ready_vms`."""
        query = READY_FRESH if sandbox is None else READY_SANDBOX
        params = {"b_pool": pool, "b_sandbox": sandbox, "b_limit": max(0, limit)}
        return await self._executor.read(lambda conn: [_vm(r) for r in conn.execute(query, params)])

    async def update_vm(
        self,
        name: str,
        *,
        expect: Sequence[str] | None,
        changes: Mapping[str, object],
        fence: WriteFence | None = None,
    ) -> VMRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.update_vm`."""
        bad = set(changes) - set(VM_COLUMNS)
        if bad:
            raise exceptions.InvalidInput(f"cannot change VM columns {sorted(bad)}")
        values = dict(changes)
        return await self._executor.run(lambda conn: update_vm(conn, name, expect, values, fence))

    async def delete_vm(self, name: str) -> bool:
        """See :meth:`corral.store.pools.PoolsRepository.delete_vm`."""
        return await self._executor.run(
            lambda conn: conn.execute(DELETE_DEAD_VM, {"b_name": name}).rowcount == 1
        )

    async def purge(self, before: float, *, limit: int | None = None) -> tuple[int, int]:
        """See :meth:`corral.store.pools.PoolsRepository.purge`."""
        bound = {"b_before": before, "b_limit": ALL_ROWS if limit is None else limit}

        def run(conn: Connection) -> tuple[int, int]:
            gone_vms = conn.execute(PURGE_VMS, bound).rowcount
            ids = [r[0] for r in conn.execute(SELECT_ENDED_TICKETS, bound)]
            if not ids:
                return gone_vms, 0
            conn.execute(PURGE_TICKET_META, {"b_ids": ids})
            return gone_vms, conn.execute(PURGE_TICKETS, {"b_ids": ids}).rowcount

        return await self._executor.run(run)

    async def purge_audit(self, before: float, *, limit: int | None = None) -> int:
        """See :meth:`corral.store.pools.PoolsRepository.purge_audit`."""
        bound = {"b_before": before, "b_limit": ALL_ROWS if limit is None else limit}
        return await self._executor.run(lambda conn: conn.execute(PURGE_AUDIT, bound).rowcount)

    async def insert_ticket(self, row: TicketRow) -> TicketRow:
        """See :meth:`corral.store.pools.PoolsRepository.insert_ticket`."""
        return await self._executor.run(lambda conn: insert_ticket(conn, row))

    async def insert_ticket_assigning(
        self,
        row: TicketRow,
        pools: Mapping[str, frozenset[str]],
        *,
        shared: Mapping[str, int] | None = None,
        decide: Decide,
    ) -> InsertedAssigned:
        """See :meth:`corral.store.pools.PoolsRepository.insert_ticket_assigning`."""
        frozen = dict(pools)
        slots = None if shared is None else dict(shared)
        return await self._executor.run(
            lambda conn: insert_ticket_assigning(conn, row, frozen, slots, decide)
        )

    async def get_ticket(self, ticket_id: str) -> TicketRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.get_ticket`."""

        def run(conn: Connection) -> TicketRow | None:
            rows = P_SELECT_TICKET.rows(conn, {"b_id": ticket_id})
            return _ticket_t(rows[0]) if rows else None

        return await self._executor.read(run)

    async def list_tickets(
        self,
        *,
        owner: str | None = None,
        states: Sequence[str] | None = None,
        expired_before: float | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> builtins.list[TicketRow]:
        """See :meth:`corral.store.pools.PoolsRepository.list_tickets`."""
        return await self._executor.read(
            lambda conn: list_tickets(conn, owner, states, expired_before, meta)
        )

    async def update_ticket(
        self, ticket_id: str, *, expect: Sequence[str], changes: Mapping[str, object]
    ) -> TicketRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.update_ticket`."""
        bad = set(changes) - set(TICKET_COLUMNS)
        if bad:
            raise exceptions.InvalidInput(f"cannot change ticket columns {sorted(bad)}")
        values = dict(changes)
        return await self._executor.run(lambda conn: update_ticket(conn, ticket_id, expect, values))

    async def held(self) -> dict[tuple[str, str], int]:
        """See :meth:`corral.store.pools.PoolsRepository.held`."""
        return await self._executor.read(held_counts)

    async def assign(
        self, ticket_id: str, vm_name: str, *, now: float, max_per_owner: int | None = None
    ) -> bool:
        """See :meth:`corral.store.pools.PoolsRepository.assign`."""
        return await self._executor.run(
            lambda conn: assign(conn, ticket_id, vm_name, now, max_per_owner)
        )

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
        """See :meth:`corral.store.pools.PoolsRepository.assign_many`."""
        chosen = list(vms)
        limits = dict(owner_limits or {})
        return await self._executor.run(
            lambda conn: assign_many(conn, ticket_id, chosen, now, slots, max_per_owner, limits)
        )

    async def allocation_inputs(
        self, pools: Mapping[str, frozenset[str]], *, shared: Mapping[str, int] | None = None
    ) -> AllocationInputs:
        """See :meth:`corral.store.pools.PoolsRepository.allocation_inputs`."""
        frozen = dict(pools)
        slots = None if shared is None else dict(shared)
        return await self._executor.read(lambda conn: allocation_inputs(conn, frozen, slots))

    async def pool_snapshot(
        self, pool: str, *, unless: Callable[[Mapping[str, int]], bool] | None = None
    ) -> PoolSnapshot:
        """See :meth:`corral.store.pools.PoolsRepository.pool_snapshot`."""
        return await self._executor.read(lambda conn: pool_snapshot(conn, pool, unless))

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
        """See :meth:`corral.store.pools.PoolsRepository.close_ticket`."""
        return await self._executor.run(
            lambda conn: close_ticket(conn, ticket_id, expect, state, vm_state, now, reason, fence)
        )

    async def set_pool_mode(self, pool: str, mode: str | None) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.set_pool_mode`."""

        def run(conn: Connection) -> None:
            done = conn.execute(update(pools).where(pools.c.name == pool).values(mode=mode))
            if done.rowcount == 0:
                conn.execute(insert(pools).values(name=pool, next_seq=0, mode=mode))

        await self._executor.run(run)

    async def pool_modes(self) -> dict[str, str]:
        """See :meth:`corral.store.pools.PoolsRepository.pool_modes`."""
        query = select(pools.c.name, pools.c.mode).where(pools.c.mode.is_not(None))
        return await self._executor.read(lambda conn: {r[0]: r[1] for r in conn.execute(query)})

    async def add_audit(self, entry: AuditEntry) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.add_audit`."""
        values = dataclasses.asdict(entry)
        await self._executor.run(lambda conn: conn.execute(insert(audit).values(values)))

    async def list_audit(
        self, *, kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> builtins.list[AuditEntry]:
        """See :meth:`corral.store.pools.PoolsRepository.list_audit`."""
        query = select(audit.c.at, audit.c.actor, audit.c.action, audit.c.kind, audit.c.target)
        query = query.add_columns(audit.c.detail)
        if kind is not None:
            query = query.where(audit.c.kind == kind)
        if target is not None:
            query = query.where(audit.c.target == target)
        query = query.order_by(audit.c.id.desc()).limit(max(0, limit))
        return await self._executor.read(lambda conn: [AuditEntry(*r) for r in conn.execute(query)])

    async def set_info(self, pool: str, key: str, value: str | None) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.set_info`."""
        await self._executor.run(lambda conn: set_info(conn, pool, key, value))

    async def get_info(self, pool: str) -> dict[str, str]:
        """See :meth:`corral.store.pools.PoolsRepository.get_info`."""
        return await self._executor.read(
            lambda conn: {r[0]: r[1] for r in conn.execute(SELECT_INFO, {"b_pool": pool})}
        )

    async def add_sample(self, pool: str, kind: str, value: float, *, at: float) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.add_sample`."""
        await self._executor.run(lambda conn: add_sample(conn, pool, kind, value, at))

    async def samples(self, pool: str, kind: str, *, limit: int) -> builtins.list[float]:
        """See :meth:`corral.store.pools.PoolsRepository.samples`."""
        params = {"b_pool": pool, "b_kind": kind, "b_limit": max(0, limit)}
        return await self._executor.read(
            lambda conn: [r[0] for r in conn.execute(SELECT_SAMPLES, params)][::-1]
        )

    async def bump(self, pool: str, counter: str, by: int = 1) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.bump`."""
        await self._executor.run(lambda conn: bump(conn, pool, counter, by))

    async def counters(self, pool: str) -> dict[str, int]:
        """See :meth:`corral.store.pools.PoolsRepository.counters`."""
        return await self._executor.read(
            lambda conn: {r[0]: r[1] for r in conn.execute(SELECT_COUNTERS, {"b_pool": pool})}
        )

    async def record_stats(
        self,
        samples: Sequence[tuple[str, str, float, float]],
        counts: Mapping[tuple[str, str], int],
    ) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.record_stats`."""
        batch, bumps = list(samples), dict(counts)
        if batch or bumps:
            await self._executor.run(lambda conn: record_stats(conn, batch, bumps))
