"""The server's answers as the client returns them: GENERATED from :mod:`corral.wire` by
``python -m corral.client.generate``; do not edit (``tests/client/test_records.py`` fails when
this is not what the generator writes).

One immutable record per wire model, with the model's fields, defaults and descriptions, read
from JSON by :meth:`~corral.client.record.Record.from_json` and written back by
:meth:`~corral.client.record.Record.to_json`, without importing pydantic
(:mod:`corral.client.record` says why).
"""

from __future__ import annotations

from enum import StrEnum

from corral.client import record
from corral.types import JSON

# corral.wire's limits, which the client checks arguments against
NO_CONTROL = "^[^\\x00-\\x1f\\x7f]*$"
MIN_TTL = 1.0
MAX_TTL = 604800.0
MAX_COUNT = 1000
MAX_REQUESTS = 16
MAX_HOLD = 604800.0


class TicketState(StrEnum):
    """Where a ticket is in its life (SPEC §5). Generated from
    :class:`corral.pools.lifecycle.TicketState`.
    """

    WAITING = "waiting"
    ASSIGNED = "assigned"
    CLOSED = "closed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


class ErrorDetail(record.Record):
    """The ``error`` member of an error response."""

    __slots__ = (
        "code",
        "message",
    )

    code: str
    """Stable machine-readable code (see corral.exceptions)."""
    message: str
    """Human-readable explanation naming what is wrong."""

    FIELDS = (
        ("code", record.text, True),
        ("message", record.text, True),
    )

    def __init__(
        self,
        *,
        code: str,
        message: str,
    ) -> None:
        _set = object.__setattr__
        _set(self, "code", code)
        _set(self, "message", message)


class ErrorBody(record.Record):
    """Every error response: ``{"error": {"code", "message"}}``."""

    __slots__ = ("error",)

    error: ErrorDetail

    FIELDS = (("error", record.record(ErrorDetail), True),)

    def __init__(
        self,
        *,
        error: ErrorDetail,
    ) -> None:
        _set = object.__setattr__
        _set(self, "error", error)


class TicketPart(record.Record):
    """One entry of a list ticket as it was asked for."""

    __slots__ = (
        "count",
        "pool",
        "tags",
    )

    pool: str | None
    tags: list[str]
    count: int

    FIELDS = (
        ("pool", record.optional(record.text), False),
        ("tags", record.list_of(record.text), False),
        ("count", record.integer, False),
    )

    def __init__(
        self,
        *,
        pool: str | None = None,
        tags: list[str] | None = None,
        count: int = 1,
    ) -> None:
        _set = object.__setattr__
        _set(self, "pool", pool)
        _set(self, "tags", [] if tags is None else tags)
        _set(self, "count", count)


class Ticket(record.Record):
    """A request for one VM (or ``count`` VMs) and, once assigned, the VMs it holds: every one
    in ``vms`` and ``addresses``, the first also in ``vm`` and ``address``.
    """

    __slots__ = (
        "address",
        "addresses",
        "assigned_at",
        "closed_at",
        "connection",
        "count",
        "created_at",
        "exclusive",
        "expires_at",
        "id",
        "meta",
        "owner",
        "pool",
        "priority",
        "reason",
        "requests",
        "sandbox",
        "state",
        "tags",
        "ttl",
        "vm",
        "vms",
    )

    id: str
    owner: str
    state: str
    """waiting, assigned, closed, cancelled, expired or failed."""
    pool: str | None
    tags: list[str]
    sandbox: str | None
    priority: int
    ttl: float | None
    """Lease length in seconds."""
    vm: str | None
    """Name of the (first) assigned VM."""
    address: str | None
    """Address of the (first) assigned VM."""
    connection: dict[str, str]
    """How to reach the (first) assigned VM beyond its address, as its backend said (user, port,
    host_key, ...); empty when it said nothing.
    """
    count: int
    """How many VMs it asked for, all together."""
    requests: list[TicketPart]
    """A list ticket's entries (empty otherwise); ``vms`` follow their order."""
    exclusive: bool
    """Whole VMs, shared with no other ticket."""
    vms: list[str]
    """Every assigned VM (``vm`` is the first)."""
    addresses: list[str | None]
    """The address of each VM of ``vms``, in the same order, while assigned."""
    created_at: float | None
    """Wall-clock time (Unix)."""
    assigned_at: float | None
    closed_at: float | None
    expires_at: float | None
    """When the lease lapses."""
    reason: str | None
    """Why it expired, failed or closed."""
    meta: dict[str, str]
    """Metadata given at creation."""

    FIELDS = (
        ("id", record.text, True),
        ("owner", record.text, True),
        ("state", record.text, True),
        ("pool", record.optional(record.text), False),
        ("tags", record.list_of(record.text), False),
        ("sandbox", record.optional(record.text), False),
        ("priority", record.integer, False),
        ("ttl", record.optional(record.number), False),
        ("vm", record.optional(record.text), False),
        ("address", record.optional(record.text), False),
        ("connection", record.dict_of(record.text), False),
        ("count", record.integer, False),
        ("requests", record.list_of(record.record(TicketPart)), False),
        ("exclusive", record.boolean, False),
        ("vms", record.list_of(record.text), False),
        ("addresses", record.list_of(record.optional(record.text)), False),
        ("created_at", record.optional(record.number), False),
        ("assigned_at", record.optional(record.number), False),
        ("closed_at", record.optional(record.number), False),
        ("expires_at", record.optional(record.number), False),
        ("reason", record.optional(record.text), False),
        ("meta", record.dict_of(record.text), False),
    )

    def __init__(
        self,
        *,
        id: str,
        owner: str,
        state: str,
        pool: str | None = None,
        tags: list[str] | None = None,
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
        vm: str | None = None,
        address: str | None = None,
        connection: dict[str, str] | None = None,
        count: int = 1,
        requests: list[TicketPart] | None = None,
        exclusive: bool = False,
        vms: list[str] | None = None,
        addresses: list[str | None] | None = None,
        created_at: float | None = None,
        assigned_at: float | None = None,
        closed_at: float | None = None,
        expires_at: float | None = None,
        reason: str | None = None,
        meta: dict[str, str] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "id", id)
        _set(self, "owner", owner)
        _set(self, "state", state)
        _set(self, "pool", pool)
        _set(self, "tags", [] if tags is None else tags)
        _set(self, "sandbox", sandbox)
        _set(self, "priority", priority)
        _set(self, "ttl", ttl)
        _set(self, "vm", vm)
        _set(self, "address", address)
        _set(self, "connection", {} if connection is None else connection)
        _set(self, "count", count)
        _set(self, "requests", [] if requests is None else requests)
        _set(self, "exclusive", exclusive)
        _set(self, "vms", [] if vms is None else vms)
        _set(self, "addresses", [] if addresses is None else addresses)
        _set(self, "created_at", created_at)
        _set(self, "assigned_at", assigned_at)
        _set(self, "closed_at", closed_at)
        _set(self, "expires_at", expires_at)
        _set(self, "reason", reason)
        _set(self, "meta", {} if meta is None else meta)


class VM(record.Record):
    """One machine of a pool."""

    __slots__ = (
        "address",
        "connection",
        "created_at",
        "exclusive",
        "external",
        "hold_until",
        "id_in_pool",
        "last_used_at",
        "livecheck_failures",
        "load",
        "machine_state",
        "name",
        "pool",
        "ready_at",
        "reason",
        "sandbox",
        "state",
        "state_since",
        "ticket",
        "tickets",
        "uses",
    )

    name: str
    pool: str
    state: str
    """spawning, ready, in_use, releasing, terminating, ..."""
    address: str | None
    ticket: str | None
    """Id of the (first) ticket holding it."""
    tickets: list[str]
    """Every ticket holding it: up to its pool's slots (one when exclusive)."""
    load: int
    """How many tickets hold it now."""
    exclusive: bool
    """Held by an exclusive ticket."""
    sandbox: str | None
    """Last sandbox it served."""
    uses: int
    id_in_pool: int
    connection: dict[str, str]
    """How to reach it beyond its address (user, port, host_key, ...), from its backend."""
    created_at: float | None
    state_since: float | None
    ready_at: float | None
    last_used_at: float | None
    livecheck_failures: int
    machine_state: str | None
    """The backend's own state of the machine (libvirt: WaitForLaunch, Powering up, Up, Paused,
    Powering down, Down), beside the pool state.
    """
    reason: str | None
    hold_until: float | None
    """While an operator holds it (or will once its ticket ends)."""
    external: bool
    """Made elsewhere and registered, or being forgotten: never destroyed by corral; forgotten
    when it retires.
    """

    FIELDS = (
        ("name", record.text, True),
        ("pool", record.text, True),
        ("state", record.text, True),
        ("address", record.optional(record.text), False),
        ("ticket", record.optional(record.text), False),
        ("tickets", record.list_of(record.text), False),
        ("load", record.integer, False),
        ("exclusive", record.boolean, False),
        ("sandbox", record.optional(record.text), False),
        ("uses", record.integer, False),
        ("id_in_pool", record.integer, False),
        ("connection", record.dict_of(record.text), False),
        ("created_at", record.optional(record.number), False),
        ("state_since", record.optional(record.number), False),
        ("ready_at", record.optional(record.number), False),
        ("last_used_at", record.optional(record.number), False),
        ("livecheck_failures", record.integer, False),
        ("machine_state", record.optional(record.text), False),
        ("reason", record.optional(record.text), False),
        ("hold_until", record.optional(record.number), False),
        ("external", record.boolean, False),
    )

    def __init__(
        self,
        *,
        name: str,
        pool: str,
        state: str,
        address: str | None = None,
        ticket: str | None = None,
        tickets: list[str] | None = None,
        load: int = 0,
        exclusive: bool = False,
        sandbox: str | None = None,
        uses: int = 0,
        id_in_pool: int = 0,
        connection: dict[str, str] | None = None,
        created_at: float | None = None,
        state_since: float | None = None,
        ready_at: float | None = None,
        last_used_at: float | None = None,
        livecheck_failures: int = 0,
        machine_state: str | None = None,
        reason: str | None = None,
        hold_until: float | None = None,
        external: bool = False,
    ) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "pool", pool)
        _set(self, "state", state)
        _set(self, "address", address)
        _set(self, "ticket", ticket)
        _set(self, "tickets", [] if tickets is None else tickets)
        _set(self, "load", load)
        _set(self, "exclusive", exclusive)
        _set(self, "sandbox", sandbox)
        _set(self, "uses", uses)
        _set(self, "id_in_pool", id_in_pool)
        _set(self, "connection", {} if connection is None else connection)
        _set(self, "created_at", created_at)
        _set(self, "state_since", state_since)
        _set(self, "ready_at", ready_at)
        _set(self, "last_used_at", last_used_at)
        _set(self, "livecheck_failures", livecheck_failures)
        _set(self, "machine_state", machine_state)
        _set(self, "reason", reason)
        _set(self, "hold_until", hold_until)
        _set(self, "external", external)


class PoolStats(record.Record):
    """Per-pool statistics (times in seconds, ``None`` without samples)."""

    __slots__ = (
        "last_spawn_error",
        "livecheck_failures",
        "recent_spawn_failures",
        "recent_spawns",
        "spawn_attempts",
        "spawn_failures",
        "spawn_p50",
        "spawn_p95",
        "spawn_success_rate",
        "terminate_failures",
        "wait_p50",
        "wait_p95",
        "wasted_spawns",
    )

    spawn_p50: float | None
    spawn_p95: float | None
    spawn_attempts: int
    spawn_failures: int
    spawn_success_rate: float | None
    wait_p50: float | None
    wait_p95: float | None
    terminate_failures: int
    livecheck_failures: int
    wasted_spawns: int
    """VMs spawned for a demand that went away, then terminated unused."""
    recent_spawns: int
    """How many latest spawns the next counts."""
    recent_spawn_failures: int
    last_spawn_error: str | None
    """Why the last spawn failed."""

    FIELDS = (
        ("spawn_p50", record.optional(record.number), False),
        ("spawn_p95", record.optional(record.number), False),
        ("spawn_attempts", record.integer, False),
        ("spawn_failures", record.integer, False),
        ("spawn_success_rate", record.optional(record.number), False),
        ("wait_p50", record.optional(record.number), False),
        ("wait_p95", record.optional(record.number), False),
        ("terminate_failures", record.integer, False),
        ("livecheck_failures", record.integer, False),
        ("wasted_spawns", record.integer, False),
        ("recent_spawns", record.integer, False),
        ("recent_spawn_failures", record.integer, False),
        ("last_spawn_error", record.optional(record.text), False),
    )

    def __init__(
        self,
        *,
        spawn_p50: float | None = None,
        spawn_p95: float | None = None,
        spawn_attempts: int = 0,
        spawn_failures: int = 0,
        spawn_success_rate: float | None = None,
        wait_p50: float | None = None,
        wait_p95: float | None = None,
        terminate_failures: int = 0,
        livecheck_failures: int = 0,
        wasted_spawns: int = 0,
        recent_spawns: int = 0,
        recent_spawn_failures: int = 0,
        last_spawn_error: str | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "spawn_p50", spawn_p50)
        _set(self, "spawn_p95", spawn_p95)
        _set(self, "spawn_attempts", spawn_attempts)
        _set(self, "spawn_failures", spawn_failures)
        _set(self, "spawn_success_rate", spawn_success_rate)
        _set(self, "wait_p50", wait_p50)
        _set(self, "wait_p95", wait_p95)
        _set(self, "terminate_failures", terminate_failures)
        _set(self, "livecheck_failures", livecheck_failures)
        _set(self, "wasted_spawns", wasted_spawns)
        _set(self, "recent_spawns", recent_spawns)
        _set(self, "recent_spawn_failures", recent_spawn_failures)
        _set(self, "last_spawn_error", last_spawn_error)


class PoolStatus(record.Record):
    """A pool's limits, its VMs counted per state, its ticket queue and its statistics."""

    __slots__ = (
        "assigned_tickets",
        "backend",
        "description",
        "info",
        "max",
        "max_starting",
        "min_ready",
        "mode",
        "name",
        "problem",
        "stats",
        "tags",
        "vms",
        "waiting_tickets",
    )

    name: str
    backend: str
    tags: list[str]
    max: int
    max_starting: int
    min_ready: int
    description: str | None
    """The config's description."""
    mode: str
    """active, paused or draining."""
    vms: dict[str, int]
    """VM count per state."""
    waiting_tickets: int
    assigned_tickets: int
    stats: PoolStats
    info: dict[str, JSON]
    """Per-pool key/value info."""
    problem: str | None
    """Why the pool is unhealthy (its recent spawns fail, with the last reason)."""

    FIELDS = (
        ("name", record.text, True),
        ("backend", record.text, True),
        ("tags", record.list_of(record.text), False),
        ("max", record.integer, True),
        ("max_starting", record.integer, True),
        ("min_ready", record.integer, True),
        ("description", record.optional(record.text), False),
        ("mode", record.text, False),
        ("vms", record.dict_of(record.integer), False),
        ("waiting_tickets", record.integer, False),
        ("assigned_tickets", record.integer, False),
        ("stats", record.record(PoolStats), False),
        ("info", record.dict_of(record.anything), False),
        ("problem", record.optional(record.text), False),
    )

    def __init__(
        self,
        *,
        name: str,
        backend: str,
        tags: list[str] | None = None,
        max: int,
        max_starting: int,
        min_ready: int,
        description: str | None = None,
        mode: str = "active",
        vms: dict[str, int] | None = None,
        waiting_tickets: int = 0,
        assigned_tickets: int = 0,
        stats: PoolStats | None = None,
        info: dict[str, JSON] | None = None,
        problem: str | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "backend", backend)
        _set(self, "tags", [] if tags is None else tags)
        _set(self, "max", max)
        _set(self, "max_starting", max_starting)
        _set(self, "min_ready", min_ready)
        _set(self, "description", description)
        _set(self, "mode", mode)
        _set(self, "vms", {} if vms is None else vms)
        _set(self, "waiting_tickets", waiting_tickets)
        _set(self, "assigned_tickets", assigned_tickets)
        _set(self, "stats", PoolStats() if stats is None else stats)
        _set(self, "info", {} if info is None else info)
        _set(self, "problem", problem)


class PoolSummary(record.Record):
    """Body of ``GET /v1/summary``: the human-readable summary of pools and their VMs."""

    __slots__ = ("text",)

    text: str

    FIELDS = (("text", record.text, True),)

    def __init__(
        self,
        *,
        text: str,
    ) -> None:
        _set = object.__setattr__
        _set(self, "text", text)


class Task(record.Record):
    """A durable operation of the task engine (SPEC §4)."""

    __slots__ = (
        "clean",
        "code",
        "created_at",
        "id",
        "jobs",
        "jobs_done",
        "jobs_total",
        "locks",
        "message",
        "persist",
        "priority",
        "recoveries",
        "recovery",
        "result",
        "state",
        "tag",
        "updated_at",
        "verb",
    )

    id: str
    verb: str
    state: str
    tag: str
    priority: str
    code: str
    """``ok``, or the stable code of the first error."""
    message: str
    result: JSON
    recovery: str | None
    persist: str | None
    clean: str | None
    jobs_done: int
    jobs_total: int
    jobs: list[str]
    recoveries: list[str]
    """Bottom first."""
    locks: dict[str, str]
    created_at: float | None
    updated_at: float | None

    FIELDS = (
        ("id", record.text, True),
        ("verb", record.text, True),
        ("state", record.text, True),
        ("tag", record.text, False),
        ("priority", record.text, False),
        ("code", record.text, False),
        ("message", record.text, False),
        ("result", record.anything, False),
        ("recovery", record.optional(record.text), False),
        ("persist", record.optional(record.text), False),
        ("clean", record.optional(record.text), False),
        ("jobs_done", record.integer, False),
        ("jobs_total", record.integer, False),
        ("jobs", record.list_of(record.text), False),
        ("recoveries", record.list_of(record.text), False),
        ("locks", record.dict_of(record.text), False),
        ("created_at", record.optional(record.number), False),
        ("updated_at", record.optional(record.number), False),
    )

    def __init__(
        self,
        *,
        id: str,
        verb: str,
        state: str,
        tag: str = "",
        priority: str = "medium",
        code: str = "ok",
        message: str = "",
        result: JSON = None,
        recovery: str | None = None,
        persist: str | None = None,
        clean: str | None = None,
        jobs_done: int = 0,
        jobs_total: int = 0,
        jobs: list[str] | None = None,
        recoveries: list[str] | None = None,
        locks: dict[str, str] | None = None,
        created_at: float | None = None,
        updated_at: float | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "id", id)
        _set(self, "verb", verb)
        _set(self, "state", state)
        _set(self, "tag", tag)
        _set(self, "priority", priority)
        _set(self, "code", code)
        _set(self, "message", message)
        _set(self, "result", result)
        _set(self, "recovery", recovery)
        _set(self, "persist", persist)
        _set(self, "clean", clean)
        _set(self, "jobs_done", jobs_done)
        _set(self, "jobs_total", jobs_total)
        _set(self, "jobs", [] if jobs is None else jobs)
        _set(self, "recoveries", [] if recoveries is None else recoveries)
        _set(self, "locks", {} if locks is None else locks)
        _set(self, "created_at", created_at)
        _set(self, "updated_at", updated_at)


class LockHolder(record.Record):
    """A holder of a lock."""

    __slots__ = (
        "mode",
        "owner",
        "since",
        "token",
    )

    owner: str
    mode: str
    since: float
    """Seconds on the server's monotonic clock."""
    token: int
    """Fencing token of the grant."""

    FIELDS = (
        ("owner", record.text, True),
        ("mode", record.text, True),
        ("since", record.number, True),
        ("token", record.integer, True),
    )

    def __init__(
        self,
        *,
        owner: str,
        mode: str,
        since: float,
        token: int,
    ) -> None:
        _set = object.__setattr__
        _set(self, "owner", owner)
        _set(self, "mode", mode)
        _set(self, "since", since)
        _set(self, "token", token)


class LockWaiter(record.Record):
    """A request waiting in a lock's queue (queue order)."""

    __slots__ = (
        "mode",
        "owner",
        "since",
        "upgrade",
    )

    owner: str
    mode: str
    since: float
    upgrade: bool

    FIELDS = (
        ("owner", record.text, True),
        ("mode", record.text, True),
        ("since", record.number, True),
        ("upgrade", record.boolean, False),
    )

    def __init__(
        self,
        *,
        owner: str,
        mode: str,
        since: float,
        upgrade: bool = False,
    ) -> None:
        _set = object.__setattr__
        _set(self, "owner", owner)
        _set(self, "mode", mode)
        _set(self, "since", since)
        _set(self, "upgrade", upgrade)


class LockStatus(record.Record):
    """One resource of the lock manager: its mode, holders and queue."""

    __slots__ = (
        "holders",
        "key",
        "mode",
        "queue",
        "token",
    )

    key: str
    mode: str | None
    token: int
    """The newest fencing token issued for it."""
    holders: list[LockHolder]
    queue: list[LockWaiter]

    FIELDS = (
        ("key", record.text, True),
        ("mode", record.optional(record.text), False),
        ("token", record.integer, False),
        ("holders", record.list_of(record.record(LockHolder)), False),
        ("queue", record.list_of(record.record(LockWaiter)), False),
    )

    def __init__(
        self,
        *,
        key: str,
        mode: str | None = None,
        token: int = 0,
        holders: list[LockHolder] | None = None,
        queue: list[LockWaiter] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "key", key)
        _set(self, "mode", mode)
        _set(self, "token", token)
        _set(self, "holders", [] if holders is None else holders)
        _set(self, "queue", [] if queue is None else queue)


class Host(record.Record):
    """One host of the cluster (``GET /v1/hosts``): its lease, incarnation and what it leads."""

    __slots__ = (
        "address",
        "alive",
        "config_hash",
        "heartbeat_at",
        "host_id",
        "incarnation",
        "leads",
        "lease_expires_at",
        "started_at",
        "tasks",
        "this",
        "version",
    )

    host_id: str
    incarnation: int
    alive: bool
    """Whether its lease is current (dead once it lapsed)."""
    address: str
    version: str
    config_hash: str
    """Digest of its pool configuration."""
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    leads: list[str]
    """Pools whose maintenance it leads."""
    tasks: int
    """Unfinished tasks recorded as this incarnation's."""
    this: bool
    """Whether it is the host that answered."""

    FIELDS = (
        ("host_id", record.text, True),
        ("incarnation", record.integer, True),
        ("alive", record.boolean, True),
        ("address", record.text, False),
        ("version", record.text, False),
        ("config_hash", record.text, False),
        ("started_at", record.number, True),
        ("heartbeat_at", record.number, True),
        ("lease_expires_at", record.number, True),
        ("leads", record.list_of(record.text), False),
        ("tasks", record.integer, False),
        ("this", record.boolean, False),
    )

    def __init__(
        self,
        *,
        host_id: str,
        incarnation: int,
        alive: bool,
        address: str = "",
        version: str = "",
        config_hash: str = "",
        started_at: float,
        heartbeat_at: float,
        lease_expires_at: float,
        leads: list[str] | None = None,
        tasks: int = 0,
        this: bool = False,
    ) -> None:
        _set = object.__setattr__
        _set(self, "host_id", host_id)
        _set(self, "incarnation", incarnation)
        _set(self, "alive", alive)
        _set(self, "address", address)
        _set(self, "version", version)
        _set(self, "config_hash", config_hash)
        _set(self, "started_at", started_at)
        _set(self, "heartbeat_at", heartbeat_at)
        _set(self, "lease_expires_at", lease_expires_at)
        _set(self, "leads", [] if leads is None else leads)
        _set(self, "tasks", tasks)
        _set(self, "this", this)


class Health(record.Record):
    """Body of ``GET /healthz``."""

    __slots__ = (
        "status",
        "version",
    )

    status: str
    version: str

    FIELDS = (
        ("status", record.text, False),
        ("version", record.text, True),
    )

    def __init__(
        self,
        *,
        status: str = "ok",
        version: str,
    ) -> None:
        _set = object.__setattr__
        _set(self, "status", status)
        _set(self, "version", version)


class AuditEntry(record.Record):
    """One operator action: who did what to which VM or pool, when."""

    __slots__ = (
        "action",
        "actor",
        "at",
        "detail",
        "kind",
        "target",
    )

    at: float
    """Wall-clock time (Unix)."""
    actor: str
    """The owner of the token that did it."""
    action: str
    """terminate, hold, release-hold, paused, draining, ..."""
    kind: str
    """vm or pool."""
    target: str
    detail: str | None

    FIELDS = (
        ("at", record.number, True),
        ("actor", record.text, True),
        ("action", record.text, True),
        ("kind", record.text, True),
        ("target", record.text, True),
        ("detail", record.optional(record.text), False),
    )

    def __init__(
        self,
        *,
        at: float,
        actor: str,
        action: str,
        kind: str,
        target: str,
        detail: str | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "at", at)
        _set(self, "actor", actor)
        _set(self, "action", action)
        _set(self, "kind", kind)
        _set(self, "target", target)
        _set(self, "detail", detail)


class PoolMode(record.Record):
    """A pool's mode after ``pause``, ``resume`` or ``drain``."""

    __slots__ = (
        "mode",
        "pool",
    )

    pool: str
    mode: str
    """active, paused or draining."""

    FIELDS = (
        ("pool", record.text, True),
        ("mode", record.text, True),
    )

    def __init__(
        self,
        *,
        pool: str,
        mode: str,
    ) -> None:
        _set = object.__setattr__
        _set(self, "pool", pool)
        _set(self, "mode", mode)


class DrainResult(record.Record):
    """Answer of ``POST /v1/pools/{name}/drain``."""

    __slots__ = (
        "dry_run",
        "pool",
        "terminated",
    )

    pool: str
    dry_run: bool
    terminated: list[str]
    """Idle VMs terminated now (with dry_run: the ones that would be)."""

    FIELDS = (
        ("pool", record.text, True),
        ("dry_run", record.boolean, False),
        ("terminated", record.list_of(record.text), False),
    )

    def __init__(
        self,
        *,
        pool: str,
        dry_run: bool = False,
        terminated: list[str] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "pool", pool)
        _set(self, "dry_run", dry_run)
        _set(self, "terminated", [] if terminated is None else terminated)


class ReconcileReport(record.Record):
    """What reconciliation of one pool found (``GET /v1/reconcile``: nothing was changed)."""

    __slots__ = (
        "foreign",
        "gone",
        "lost",
        "orphans",
        "pool",
        "sweep",
    )

    pool: str
    sweep: list[str]
    """Leaked machines to terminate."""
    foreign: list[str]
    """Machines this store never created: left alone."""
    lost: list[str]
    """VMs the backend lost: marked."""
    gone: list[str]
    """Terminating VMs the backend no longer has."""
    orphans: list[str]
    """VMs stuck without a task: to terminate."""

    FIELDS = (
        ("pool", record.text, True),
        ("sweep", record.list_of(record.text), False),
        ("foreign", record.list_of(record.text), False),
        ("lost", record.list_of(record.text), False),
        ("gone", record.list_of(record.text), False),
        ("orphans", record.list_of(record.text), False),
    )

    def __init__(
        self,
        *,
        pool: str,
        sweep: list[str] | None = None,
        foreign: list[str] | None = None,
        lost: list[str] | None = None,
        gone: list[str] | None = None,
        orphans: list[str] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "pool", pool)
        _set(self, "sweep", [] if sweep is None else sweep)
        _set(self, "foreign", [] if foreign is None else foreign)
        _set(self, "lost", [] if lost is None else lost)
        _set(self, "gone", [] if gone is None else gone)
        _set(self, "orphans", [] if orphans is None else orphans)


class ReloadResult(record.Record):
    """Answer of ``POST /v1/config/reload``."""

    __slots__ = (
        "added",
        "changed",
        "removed",
        "restart_needed",
    )

    added: list[str]
    changed: list[str]
    removed: list[str]
    """Pools now draining; gone once empty."""
    restart_needed: list[str]
    """Changed keys that apply only after a restart."""

    FIELDS = (
        ("added", record.list_of(record.text), False),
        ("changed", record.list_of(record.text), False),
        ("removed", record.list_of(record.text), False),
        ("restart_needed", record.list_of(record.text), False),
    )

    def __init__(
        self,
        *,
        added: list[str] | None = None,
        changed: list[str] | None = None,
        removed: list[str] | None = None,
        restart_needed: list[str] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "added", [] if added is None else added)
        _set(self, "changed", [] if changed is None else changed)
        _set(self, "removed", [] if removed is None else removed)
        _set(self, "restart_needed", [] if restart_needed is None else restart_needed)


class CommandLogEntry(record.Record):
    """One backend command run for a VM (``GET /v1/vms/{name}/logs``): its output (capped),
    exit status (``null``: killed on its timeout or not started) and duration in seconds.
    """

    __slots__ = (
        "argv",
        "at",
        "command",
        "duration",
        "exit_status",
        "id",
        "pool",
        "stderr",
        "stdout",
        "vm",
    )

    id: int
    """Increases with every record: follow a log with ``after=``."""
    vm: str
    pool: str
    command: str
    """new, delete, livecheck or release."""
    argv: list[str]
    exit_status: int | None
    duration: float
    stdout: str
    """Its first 16 KiB."""
    stderr: str
    """Its last 16 KiB."""
    at: float
    """When it ended (wall clock, Unix)."""

    FIELDS = (
        ("id", record.integer, True),
        ("vm", record.text, True),
        ("pool", record.text, True),
        ("command", record.text, True),
        ("argv", record.list_of(record.text), False),
        ("exit_status", record.optional(record.integer), False),
        ("duration", record.number, False),
        ("stdout", record.text, False),
        ("stderr", record.text, False),
        ("at", record.number, False),
    )

    def __init__(
        self,
        *,
        id: int,
        vm: str,
        pool: str,
        command: str,
        argv: list[str] | None = None,
        exit_status: int | None = None,
        duration: float = 0.0,
        stdout: str = "",
        stderr: str = "",
        at: float = 0.0,
    ) -> None:
        _set = object.__setattr__
        _set(self, "id", id)
        _set(self, "vm", vm)
        _set(self, "pool", pool)
        _set(self, "command", command)
        _set(self, "argv", [] if argv is None else argv)
        _set(self, "exit_status", exit_status)
        _set(self, "duration", duration)
        _set(self, "stdout", stdout)
        _set(self, "stderr", stderr)
        _set(self, "at", at)


class Machine(record.Record):
    """A static pool's machine (answer of ``POST /v1/vms/{name}/return``)."""

    __slots__ = (
        "address",
        "attrs",
        "name",
        "pool",
        "reason",
        "since",
        "state",
        "vm",
    )

    name: str
    pool: str
    address: str
    state: str
    """free, reserved, maintenance or retiring."""
    vm: str | None
    """The VM (reservation) holding it."""
    reason: str | None
    """Why it is in maintenance."""
    since: float | None
    attrs: dict[str, JSON]

    FIELDS = (
        ("name", record.text, True),
        ("pool", record.text, True),
        ("address", record.text, True),
        ("state", record.text, True),
        ("vm", record.optional(record.text), False),
        ("reason", record.optional(record.text), False),
        ("since", record.optional(record.number), False),
        ("attrs", record.dict_of(record.anything), False),
    )

    def __init__(
        self,
        *,
        name: str,
        pool: str,
        address: str,
        state: str,
        vm: str | None = None,
        reason: str | None = None,
        since: float | None = None,
        attrs: dict[str, JSON] | None = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "name", name)
        _set(self, "pool", pool)
        _set(self, "address", address)
        _set(self, "state", state)
        _set(self, "vm", vm)
        _set(self, "reason", reason)
        _set(self, "since", since)
        _set(self, "attrs", {} if attrs is None else attrs)


class PoolInfoEntry(record.Record):
    """One per-pool info pair (``GET``/``PUT /v1/pools/{name}/info/{key}``)."""

    __slots__ = (
        "key",
        "pool",
        "value",
    )

    pool: str
    key: str
    value: JSON

    FIELDS = (
        ("pool", record.text, True),
        ("key", record.text, True),
        ("value", record.anything, False),
    )

    def __init__(
        self,
        *,
        pool: str,
        key: str,
        value: JSON = None,
    ) -> None:
        _set = object.__setattr__
        _set(self, "pool", pool)
        _set(self, "key", key)
        _set(self, "value", value)


__all__ = [
    "MAX_COUNT",
    "MAX_HOLD",
    "MAX_REQUESTS",
    "MAX_TTL",
    "MIN_TTL",
    "NO_CONTROL",
    "VM",
    "AuditEntry",
    "CommandLogEntry",
    "DrainResult",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "Host",
    "LockHolder",
    "LockStatus",
    "LockWaiter",
    "Machine",
    "PoolInfoEntry",
    "PoolMode",
    "PoolStats",
    "PoolStatus",
    "PoolSummary",
    "ReconcileReport",
    "ReloadResult",
    "Task",
    "Ticket",
    "TicketPart",
    "TicketState",
]
