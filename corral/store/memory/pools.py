"""In-memory pools repository (see :mod:`corral.store.pools` for the contract).

Indexes (VMs per pool, state counts, free ready VMs per sandbox, open tickets, held counts) keep
every method the controller calls on its hot path independent of the number of VMs, like the SQL
indexes do. Each method runs without awaiting, so it is atomic on the event loop. Must not do I/O.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

from corral import exceptions
from corral.pools.lifecycle import (
    DEAD_VM_STATES,
    HOLD_WINS,
    OPEN_TICKET_STATES,
    PURGED_VM_STATES,
    TICKET_RULES,
    VM_RULES,
    TicketEvent,
    VMEvent,
    ticket_target,
    values,
    vm_sources,
    vm_target,
)
from corral.store.pools import (
    TICKET_COLUMNS,
    VM_COLUMNS,
    AllocationInputs,
    AuditEntry,
    Closed,
    Decide,
    IdleUsedVM,
    InsertedAssigned,
    LeaseFence,
    PoolSnapshot,
    TicketRow,
    VMRow,
    WriteFence,
    wanted_candidates,
    wanted_shared,
)

_DEAD = frozenset(values(DEAD_VM_STATES))
_PURGED = frozenset(values(PURGED_VM_STATES))
_REGISTERED = str(vm_target(VMEvent.REGISTERED))
_OPEN = frozenset(values(OPEN_TICKET_STATES))
# the states of the two atomic writes come from the lifecycle table
_VM_TAKE = VM_RULES[VMEvent.ASSIGNED]
_TICKET_TAKE = TICKET_RULES[TicketEvent.ASSIGNED]
_VM_FREE = frozenset(vm_sources(VMEvent.FREED_TO_TERMINATE))
_VM_TAKEN = str(vm_target(VMEvent.ASSIGNED))
_TICKET_TAKEN = str(ticket_target(TicketEvent.ASSIGNED))
SAMPLE_LIMIT = 10_000
"""Samples kept per pool and kind."""


def _ticket_order(row: TicketRow) -> tuple[int, int]:
    return (-row.priority, row.seq)


class MemoryPoolsRepository:
    """Pools' rows in dicts with the indexes the controller's queries need."""

    def __init__(self) -> None:
        self._vms: dict[str, VMRow] = {}
        self._by_pool: dict[str, dict[str, None]] = defaultdict(dict)
        self._counts: dict[str, Counter[str]] = defaultdict(Counter)
        self._ready: dict[tuple[str, str | None], dict[str, None]] = defaultdict(dict)
        self._free_ids: dict[str, list[int]] = defaultdict(list)  # heaps of released ids
        self._fresh_ids: dict[str, int] = defaultdict(int)  # every id below is or was taken
        self._next: dict[str, int] = defaultdict(int)
        self._held: Counter[tuple[str, str]] = Counter()
        self._held_pool: dict[str, str] = {}  # assigned ticket -> the pool it counts in
        self._held_parts: dict[str, Counter[str]] = {}  # assigned list ticket -> VMs per pool
        self._shared: dict[tuple[str, str | None], dict[str, None]] = defaultdict(dict)
        self._tickets: dict[str, TicketRow] = {}
        self._open: dict[str, None] = {}
        self._seq = itertools.count(1)
        self._info: dict[str, dict[str, str]] = defaultdict(dict)
        self._samples: dict[tuple[str, str], deque[float]] = {}
        self._counters: dict[str, Counter[str]] = defaultdict(Counter)
        self._modes: dict[str, str] = {}
        self._audit: list[AuditEntry] = []

    # --- index maintenance --------------------------------------------------------------------

    @staticmethod
    def _ready_key(row: VMRow) -> tuple[str, str | None] | None:
        if row.state not in _VM_TAKE.sources or row.ticket is not None:
            return None
        if row.uses == 0:
            return (row.pool, None)
        return None if row.sandbox is None else (row.pool, row.sandbox)

    def _put_vm(self, old: VMRow | None, new: VMRow) -> None:
        if old is not None:
            self._counts[old.pool][old.state] -= 1
            if self._counts[old.pool][old.state] == 0:
                del self._counts[old.pool][old.state]
            key = self._ready_key(old)
            if key is not None:
                self._ready[key].pop(old.name, None)
            if old.state == _VM_TAKEN and old.load > 0:
                self._shared[(old.pool, old.sandbox)].pop(old.name, None)
            if old.state not in _DEAD and new.state in _DEAD:
                heapq.heappush(self._free_ids[old.pool], old.id_in_pool)
        self._vms[new.name] = new
        self._counts[new.pool][new.state] += 1
        key = self._ready_key(new)
        if key is not None:
            self._ready[key][new.name] = None
        if new.state == _VM_TAKEN and new.load > 0 and not new.exclusive:
            self._shared[(new.pool, new.sandbox)][new.name] = None

    def _take_id(self, pool: str) -> int:
        free = self._free_ids[pool]
        if free:
            return heapq.heappop(free)
        taken = self._fresh_ids[pool]
        self._fresh_ids[pool] = taken + 1
        return taken

    def _put_ticket(self, new: TicketRow) -> None:
        old = self._tickets.get(new.id)
        if old is not None and old.state == _TICKET_TAKEN:
            pool = self._held_pool.pop(old.id, None)
            per_pool = self._held_parts.pop(old.id, Counter())
            if pool is not None:
                per_pool[pool] += old.count
            for pool, n in per_pool.items():
                self._held[(old.owner, pool)] -= n
                if self._held[(old.owner, pool)] <= 0:
                    del self._held[(old.owner, pool)]
        if new.state == _TICKET_TAKEN and new.requests:
            # a list ticket: each VM counts in its own pool
            parts = Counter(self._vms[n].pool for n in new.vms or (new.vm,) if n in self._vms)
            self._held_parts[new.id] = parts
            for pool, n in parts.items():
                self._held[(new.owner, pool)] += n
        elif new.state == _TICKET_TAKEN and new.vm is not None and new.vm in self._vms:
            pool = self._vms[new.vm].pool
            self._held_pool[new.id] = pool
            self._held[(new.owner, pool)] += new.count
        self._tickets[new.id] = new
        if new.state in _OPEN:
            self._open[new.id] = None
        else:
            self._open.pop(new.id, None)

    # --- VMs ----------------------------------------------------------------------------------

    async def create_vm(
        self, pool: str, *, state: str, now: float, fence: LeaseFence | None = None
    ) -> VMRow:
        """See :meth:`corral.store.pools.PoolsRepository.create_vm` (one process: no cluster
        lease, ``fence`` is ignored)."""
        self._next[pool] += 1
        id_in_pool = self._take_id(pool)
        row = VMRow(
            name=f"{pool}-{self._next[pool]:06d}",
            pool=pool,
            state=state,
            created_at=now,
            state_since=now,
            id_in_pool=id_in_pool,
        )
        self._by_pool[pool][row.name] = None
        self._put_vm(None, row)
        return row

    async def register_vm(
        self, pool: str, name: str, *, address: str, handle: str, now: float
    ) -> VMRow:
        """See :meth:`corral.store.pools.PoolsRepository.register_vm`."""
        if name in self._vms:
            raise exceptions.Conflict(f"a VM named {name!r} is already recorded")
        row = VMRow(
            name=name,
            pool=pool,
            state=_REGISTERED,
            created_at=now,
            state_since=now,
            id_in_pool=self._take_id(pool),
            address=address,
            handle=handle,
            ready_at=now,
            external=True,
        )
        self._by_pool[pool][row.name] = None
        self._put_vm(None, row)
        return row

    async def vms_issued(self, pool: str) -> int:
        """See :meth:`corral.store.pools.PoolsRepository.vms_issued`."""
        return self._next.get(pool, 0)

    async def get_vm(self, name: str) -> VMRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.get_vm`."""
        return self._vms.get(name)

    async def list_vms(
        self,
        *,
        pool: str | None = None,
        states: Sequence[str] | None = None,
        address: str | None = None,
        ticket: str | None = None,
    ) -> list[VMRow]:
        """See :meth:`corral.store.pools.PoolsRepository.list_vms`."""
        names = self._by_pool.get(pool, {}) if pool is not None else self._vms
        wanted = None if states is None else frozenset(states)
        rows = []
        for name in names:
            row = self._vms[name]
            if wanted is not None and row.state not in wanted:
                continue
            if address is not None and row.address != address:
                continue
            if ticket is not None and row.ticket != ticket and ticket not in row.tickets:
                continue
            rows.append(row)
        return rows

    async def count_vms(self, pool: str) -> dict[str, int]:
        """See :meth:`corral.store.pools.PoolsRepository.count_vms`."""
        return {state: n for state, n in self._counts.get(pool, Counter()).items() if n > 0}

    async def ready_vms(self, pool: str, *, sandbox: str | None, limit: int) -> list[VMRow]:
        """See :meth:`corral.store.pools.PoolsRepository.ready_vms`."""
        names = self._ready.get((pool, sandbox), {})
        return [self._vms[name] for name in itertools.islice(names, max(0, limit))]

    async def update_vm(
        self,
        name: str,
        *,
        expect: Sequence[str] | None,
        changes: Mapping[str, object],
        fence: WriteFence | None = None,
    ) -> VMRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.update_vm` (one process: no cluster
        lease nor lock table, ``fence`` is ignored)."""
        bad = set(changes) - set(VM_COLUMNS)
        if bad:
            raise exceptions.InvalidInput(f"cannot change VM columns {sorted(bad)}")
        old = self._vms.get(name)
        if old is None or (expect is not None and old.state not in expect):
            return None
        new = replace(old, **changes)  # type: ignore[arg-type]
        self._put_vm(old, new)
        return new

    async def delete_vm(self, name: str) -> bool:
        """See :meth:`corral.store.pools.PoolsRepository.delete_vm`."""
        row = self._vms.get(name)
        if row is None or row.state not in _DEAD:
            return False
        del self._vms[name]
        self._by_pool[row.pool].pop(name, None)
        self._counts[row.pool][row.state] -= 1
        return True

    async def purge(self, before: float, *, limit: int | None = None) -> tuple[int, int]:
        """See :meth:`corral.store.pools.PoolsRepository.purge`."""
        old_vms = [
            v.name for v in self._vms.values() if v.state in _PURGED and v.state_since < before
        ][:limit]
        for name in old_vms:
            await self.delete_vm(name)
        old_tickets = [
            t.id
            for t in self._tickets.values()
            if t.state not in _OPEN and t.closed_at is not None and t.closed_at < before
        ][:limit]
        for tid in old_tickets:
            del self._tickets[tid]
        return len(old_vms), len(old_tickets)

    # --- tickets ------------------------------------------------------------------------------

    async def insert_ticket(self, row: TicketRow) -> TicketRow:
        """See :meth:`corral.store.pools.PoolsRepository.insert_ticket`."""
        if row.id in self._tickets:
            raise exceptions.Conflict(f"ticket {row.id} already exists")
        stored = replace(row, seq=next(self._seq))
        self._put_ticket(stored)
        return stored

    async def insert_ticket_assigning(
        self,
        row: TicketRow,
        pools: Mapping[str, frozenset[str]],
        *,
        shared: Mapping[str, int] | None = None,
        decide: Decide,
    ) -> InsertedAssigned:
        """See :meth:`corral.store.pools.PoolsRepository.insert_ticket_assigning`."""
        # one transaction: none of these awaits yields to the loop (they touch memory only)
        stored = await self.insert_ticket(row)
        inputs = await self.allocation_inputs(pools, shared=shared)
        writes = tuple(decide(inputs))
        done = []
        for write in writes:
            done.append(
                await self.assign_many(
                    write.ticket,
                    write.vms,
                    now=write.now,
                    slots=write.slots,
                    max_per_owner=write.max_per_owner,
                    owner_limits=write.owner_limits,
                )
            )
        return InsertedAssigned(stored, inputs, writes, tuple(done))

    async def get_ticket(self, ticket_id: str) -> TicketRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.get_ticket`."""
        return self._tickets.get(ticket_id)

    async def list_tickets(
        self,
        *,
        owner: str | None = None,
        states: Sequence[str] | None = None,
        expired_before: float | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> list[TicketRow]:
        """See :meth:`corral.store.pools.PoolsRepository.list_tickets`."""
        wanted = None if states is None else frozenset(states)
        pairs = set((meta or {}).items())
        source = self._open if wanted is not None and wanted <= _OPEN else self._tickets
        rows = []
        for tid in source:
            row = self._tickets[tid]
            if wanted is not None and row.state not in wanted:
                continue
            if owner is not None and row.owner != owner:
                continue
            if pairs and not pairs <= set(row.meta):
                continue
            if expired_before is not None and (
                row.expires_at is None or row.expires_at >= expired_before
            ):
                continue
            rows.append(row)
        rows.sort(key=_ticket_order)
        return rows

    async def update_ticket(
        self, ticket_id: str, *, expect: Sequence[str], changes: Mapping[str, object]
    ) -> TicketRow | None:
        """See :meth:`corral.store.pools.PoolsRepository.update_ticket`."""
        bad = set(changes) - set(TICKET_COLUMNS)
        if bad:
            raise exceptions.InvalidInput(f"cannot change ticket columns {sorted(bad)}")
        old = self._tickets.get(ticket_id)
        if old is None or old.state not in expect:
            return None
        new = replace(old, **changes)  # type: ignore[arg-type]
        self._put_ticket(new)
        return new

    async def held(self) -> dict[tuple[str, str], int]:
        """See :meth:`corral.store.pools.PoolsRepository.held`."""
        return {key: n for key, n in self._held.items() if n > 0}

    async def assign(
        self, ticket_id: str, vm_name: str, *, now: float, max_per_owner: int | None = None
    ) -> bool:
        """See :meth:`corral.store.pools.PoolsRepository.assign`."""
        return await self.assign_many(
            ticket_id, [(vm_name, 0)], now=now, max_per_owner=max_per_owner
        )

    def _may_take(self, vm: VMRow | None, ticket: TicketRow, load: int, slots: int) -> bool:
        if vm is None or vm.load != load or vm.exclusive:
            return False
        if load == 0:
            return vm.state in _VM_TAKE.sources and vm.ticket is None
        return (
            vm.state == _VM_TAKEN
            and not ticket.exclusive
            and vm.sandbox == ticket.sandbox
            and load + 1 <= slots
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
        ticket = self._tickets.get(ticket_id)
        names = [name for name, _ in vms]
        if ticket is None or not vms or len(set(names)) != len(names):
            return False
        if ticket.state not in _TICKET_TAKE.sources or len(vms) != ticket.count:
            return False
        found = [self._vms.get(name) for name in names]
        if not all(
            self._may_take(vm, ticket, load, slots)
            for vm, (_, load) in zip(found, vms, strict=True)
        ):
            return False
        taken = [vm for vm in found if vm is not None]
        if ticket.requests:
            # a list ticket: free VMs only, of any pools, within each pool's max_per_owner
            if any(load for _, load in vms):
                return False
            per_pool = Counter(vm.pool for vm in taken)
            limits = owner_limits or {}
            if any(
                p in limits and self._held[(ticket.owner, p)] + n > limits[p]
                for p, n in per_pool.items()
            ):
                return False
        elif len({vm.pool for vm in taken}) != 1:
            return False
        pool = taken[0].pool
        if (
            not ticket.requests
            and max_per_owner is not None
            and self._held[(ticket.owner, pool)] + len(vms) > max_per_owner
        ):
            return False
        for vm in taken:
            if vm.load == 0:
                new = replace(
                    vm,
                    state=_VM_TAKEN,
                    state_since=now,
                    ticket=ticket_id,
                    owner=ticket.owner,
                    sandbox=ticket.sandbox,
                    uses=vm.uses + 1,
                    last_used_at=now,
                    load=1,
                    exclusive=ticket.exclusive,
                    tickets=(ticket_id,),
                )
            else:
                new = replace(
                    vm,
                    uses=vm.uses + 1,
                    last_used_at=now,
                    load=vm.load + 1,
                    tickets=(*vm.tickets, ticket_id),
                )
            self._put_vm(vm, new)
        self._put_ticket(
            replace(
                ticket,
                state=_TICKET_TAKEN,
                vm=names[0],
                vms=tuple(names) if len(names) > 1 else (),
                assigned_at=now,
            )
        )
        return True

    async def allocation_inputs(
        self, pools: Mapping[str, frozenset[str]], *, shared: Mapping[str, int] | None = None
    ) -> AllocationInputs:
        """See :meth:`corral.store.pools.PoolsRepository.allocation_inputs`."""
        waiting = await self.list_tickets(states=sorted(_TICKET_TAKE.sources))
        if not waiting:
            return AllocationInputs(waiting=(), held={}, ready=())
        ready: list[VMRow] = []
        for (pool, sandbox), limit in wanted_candidates(waiting, pools).items():
            ready.extend(await self.ready_vms(pool, sandbox=sandbox, limit=limit))
        if shared:
            for (pool, sandbox), limit in wanted_shared(waiting, pools, shared).items():
                rows = (self._vms[n] for n in self._shared.get((pool, sandbox), {}))
                room = (v for v in rows if v.load < shared[pool])
                ready.extend(itertools.islice(room, limit))
        return AllocationInputs(waiting=tuple(waiting), held=await self.held(), ready=tuple(ready))

    async def pool_snapshot(
        self, pool: str, *, unless: Callable[[Mapping[str, int]], bool] | None = None
    ) -> PoolSnapshot:
        """See :meth:`corral.store.pools.PoolsRepository.pool_snapshot`."""
        counts = await self.count_vms(pool)
        if unless is not None and unless(counts):
            return PoolSnapshot(counts=counts, waiting=(), held={}, blocked=True)
        return PoolSnapshot(
            counts=counts,
            waiting=tuple(await self.list_tickets(states=sorted(_TICKET_TAKE.sources))),
            held=await self.held(),
            idle_used=tuple(
                IdleUsedVM(v.name, v.sandbox, v.last_used_at)
                for v in sorted(
                    (self._vms[n] for n in self._by_pool.get(pool, {})),
                    key=lambda v: (v.last_used_at or 0.0, v.name),
                )
                if v.state in _VM_TAKE.sources and v.ticket is None and v.uses > 0
            ),
        )

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
        """See :meth:`corral.store.pools.PoolsRepository.close_ticket` (``fence`` is ignored:
        one process)."""
        ticket = self._tickets.get(ticket_id)
        if ticket is None or ticket.state not in expect:
            return None
        freed: list[VMRow] = []
        for name in ticket.vms or ((ticket.vm,) if ticket.vm is not None else ()):
            vm = self._vms.get(name)
            if vm is None or ticket_id not in (vm.tickets or (vm.ticket,)):
                continue
            if vm.state not in _VM_FREE:
                continue
            if vm.load > 1:  # others still share it: one ticket less, nothing else
                left = tuple(t for t in vm.tickets if t != ticket_id)
                first = self._tickets.get(left[0])
                self._put_vm(
                    vm,
                    replace(
                        vm,
                        load=vm.load - 1,
                        tickets=left,
                        ticket=left[0],
                        owner=None if first is None else first.owner,
                    ),
                )
                continue
            new_vm = replace(
                vm,
                state=HOLD_WINS.value if vm.hold_until is not None else vm_state or vm.state,
                state_since=now,
                ticket=None,
                owner=None,
                last_used_at=now,
                load=0,
                exclusive=False,
                tickets=(),
            )
            self._put_vm(vm, new_vm)
            freed.append(new_vm)
        new_ticket = replace(ticket, state=state, closed_at=now, reason=reason)
        self._put_ticket(new_ticket)
        main = next((v for v in freed if v.name == ticket.vm), None)
        return Closed(ticket=new_ticket, vm=main, others=tuple(v for v in freed if v is not main))

    # --- operators: pool modes and the audit trail ---------------------------------------------

    async def set_pool_mode(self, pool: str, mode: str | None) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.set_pool_mode`."""
        if mode is None:
            self._modes.pop(pool, None)
        else:
            self._modes[pool] = mode

    async def pool_modes(self) -> dict[str, str]:
        """See :meth:`corral.store.pools.PoolsRepository.pool_modes`."""
        return dict(self._modes)

    async def add_audit(self, entry: AuditEntry) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.add_audit`."""
        self._audit.append(entry)

    async def purge_audit(self, before: float, *, limit: int | None = None) -> int:
        """See :meth:`corral.store.pools.PoolsRepository.purge_audit`."""
        old = [i for i, e in enumerate(self._audit) if e.at < before][:limit]
        gone = set(old)
        self._audit = [e for i, e in enumerate(self._audit) if i not in gone]
        return len(old)

    async def list_audit(
        self, *, kind: str | None = None, target: str | None = None, limit: int = 100
    ) -> list[AuditEntry]:
        """See :meth:`corral.store.pools.PoolsRepository.list_audit`."""
        found = [
            e
            for e in reversed(self._audit)
            if (kind is None or e.kind == kind) and (target is None or e.target == target)
        ]
        return found[: max(0, limit)]

    # --- info and statistics ------------------------------------------------------------------

    async def set_info(self, pool: str, key: str, value: str | None) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.set_info`."""
        if value is None:
            self._info[pool].pop(key, None)
        else:
            self._info[pool][key] = value

    async def get_info(self, pool: str) -> dict[str, str]:
        """See :meth:`corral.store.pools.PoolsRepository.get_info`."""
        return dict(self._info.get(pool, {}))

    async def add_sample(self, pool: str, kind: str, value: float, *, at: float) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.add_sample`."""
        bucket = self._samples.get((pool, kind))
        if bucket is None:
            bucket = self._samples[(pool, kind)] = deque(maxlen=SAMPLE_LIMIT)
        bucket.append(value)

    async def samples(self, pool: str, kind: str, *, limit: int) -> list[float]:
        """See :meth:`corral.store.pools.PoolsRepository.samples`."""
        bucket = self._samples.get((pool, kind), deque())
        return list(bucket)[-limit:] if limit > 0 else []

    async def bump(self, pool: str, counter: str, by: int = 1) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.bump`."""
        self._counters[pool][counter] += by

    async def counters(self, pool: str) -> dict[str, int]:
        """See :meth:`corral.store.pools.PoolsRepository.counters`."""
        return dict(self._counters.get(pool, Counter()))

    async def record_stats(
        self,
        samples: Sequence[tuple[str, str, float, float]],
        counts: Mapping[tuple[str, str], int],
    ) -> None:
        """See :meth:`corral.store.pools.PoolsRepository.record_stats`."""
        for pool, kind, value, at in samples:
            await self.add_sample(pool, kind, value, at=at)
        for (pool, counter), by in counts.items():
            await self.bump(pool, counter, by)
