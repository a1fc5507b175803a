"""The JSON shapes of corral's HTTP API: the one small module the server and the clients share.

These pydantic models are the wire contract: the API validates what it sends against them and
publishes them in its OpenAPI schema; :mod:`corral.client` parses responses into them, so callers
get typed results. Unknown fields sent by a newer server are ignored, so an older client keeps
working. States are plain text on the wire (an older client must not refuse a state a newer
server adds); compare them with :mod:`corral.pools.lifecycle`'s enums, which are text too. This
module must not import the server side (FastAPI, the controller, the store) nor the client.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, JsonValue

__all__ = [
    "VM",
    "AuditEntry",
    "CommandLogEntry",
    "DrainResult",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "HoldRequest",
    "Host",
    "LockHolder",
    "LockStatus",
    "LockWaiter",
    "PoolMode",
    "PoolStats",
    "PoolStatus",
    "PoolSummary",
    "ReconcileReport",
    "ReloadResult",
    "Task",
    "Ticket",
    "TicketRequest",
]


class _Wire(BaseModel):
    """Base of every wire model: immutable, unknown fields ignored."""

    # defer_build: a model's validator is built when first used, not at import, so that a
    # client command pays only for the models it reads (see docs/performance.md, CLI start-up).
    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)


class ErrorDetail(_Wire):
    """The ``error`` member of an error response."""

    code: str = Field(description="Stable machine-readable code (see corral.exceptions).")
    message: str = Field(description="Human-readable explanation naming what is wrong.")


class ErrorBody(_Wire):
    """Every error response: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
"""Pattern of the strings a request may carry: no control characters (NUL above all)."""

MIN_TTL = 1.0
"""The shortest lease a ticket may ask for, in seconds."""

MAX_TTL = 7 * 24 * 3600.0
"""The longest lease a ticket may ask for, in seconds."""

MAX_COUNT = 1000
"""The most VMs one ticket may ask for (the server refuses more than its pools can give)."""

Text = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_CONTROL)]
"""A name, owner or tag of a request: 1 to 255 characters, no control characters."""

MAX_REQUESTS = 16
"""The most entries one list ticket (``requests``) may have."""


class TicketEntry(BaseModel):
    """One entry of a list ticket's ``requests``: ``count`` VMs of ``pool``, or of a pool whose
    tags include ``tags`` (a pool or tags, not both)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    pool: Text | None = Field(default=None, description="Pool to take these VMs from.")
    tags: list[Text] = Field(
        default_factory=list,
        max_length=64,
        description="Or: a pool whose tags include these (a pool or tags, not both).",
    )
    count: int = Field(default=1, ge=1, le=MAX_COUNT, description="How many VMs.")


class TicketRequest(BaseModel):
    """Body of ``POST /v1/tickets``: a request for one VM (or ``count`` VMs), by pool or by tags.

    Strict: ``"10"`` or ``true`` is not a number, a float is not a priority, ``"yes"`` is not a
    boolean, and ``ttl`` is a finite number of seconds from :data:`MIN_TTL` to :data:`MAX_TTL`.
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    pool: Text | None = Field(default=None, description="Pool to take the VM from.")
    tags: list[Text] = Field(
        default_factory=list,
        max_length=64,
        description="A VM qualifies when these tags are a subset of its pool's tags.",
    )
    owner: Text | None = Field(
        default=None,
        description="Owner of the ticket; defaults to the token's owner (admins may set it).",
    )
    sandbox: Text | None = Field(
        default=None, description="VMs are reused only within one sandbox."
    )
    priority: int = Field(default=0, ge=-1_000_000, le=1_000_000, description="Higher first.")
    ttl: float | None = Field(
        default=None,
        ge=MIN_TTL,
        le=MAX_TTL,
        allow_inf_nan=False,
        description="Lease in seconds; the ticket expires unless renewed within it.",
    )
    meta: dict[str, str] = Field(
        default_factory=dict,
        description="Small key/value metadata kept with the ticket and searchable "
        "(a build's task id, its chroot, ...).",
    )
    count: int = Field(
        default=1,
        ge=1,
        le=MAX_COUNT,
        description="How many VMs, all of one pool, assigned together or not at all (a "
        "multi-node test never holds half of what it needs); counts as that many tickets "
        "against max_per_owner. More than any matching pool can give is refused.",
    )
    exclusive: bool = Field(
        default=False,
        description="Whole VMs: on a pool whose VMs serve several tickets at once (slots), "
        "share them with no other ticket.",
    )
    requests: list[TicketEntry] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_REQUESTS,
        description="A list ticket instead of pool/tags/count (not with them): one entry per "
        "set of VMs, each by pool or by tags with its count, all assigned together or not at "
        "all; ``vms`` lists them in entry order. Counts as that many tickets against each "
        "pool's max_per_owner.",
    )


class TicketPart(_Wire):
    """One entry of a list ticket as it was asked for."""

    pool: str | None = None
    tags: list[str] = Field(default_factory=list)
    count: int = 1


class Ticket(_Wire):
    """A request for one VM (or ``count`` VMs) and, once assigned, the VMs it holds: every one
    in ``vms`` and ``addresses``, the first also in ``vm`` and ``address``."""

    id: str
    owner: str
    state: str = Field(description="waiting, assigned, closed, cancelled, expired or failed.")
    pool: str | None = None
    tags: list[str] = Field(default_factory=list)
    sandbox: str | None = None
    priority: int = 0
    ttl: float | None = Field(default=None, description="Lease length in seconds.")
    vm: str | None = Field(default=None, description="Name of the (first) assigned VM.")
    address: str | None = Field(default=None, description="Address of the (first) assigned VM.")
    connection: dict[str, str] = Field(
        default_factory=dict,
        description="How to reach the (first) assigned VM beyond its address, as its backend "
        "said (user, port, host_key, ...); empty when it said nothing.",
    )
    count: int = Field(default=1, description="How many VMs it asked for, all together.")
    requests: list[TicketPart] = Field(
        default_factory=list,
        description="A list ticket's entries (empty otherwise); ``vms`` follow their order.",
    )
    exclusive: bool = Field(default=False, description="Whole VMs, shared with no other ticket.")
    vms: list[str] = Field(
        default_factory=list, description="Every assigned VM (``vm`` is the first)."
    )
    addresses: list[str | None] = Field(
        default_factory=list,
        description="The address of each VM of ``vms``, in the same order, while assigned.",
    )
    created_at: float | None = Field(default=None, description="Wall-clock time (Unix).")
    assigned_at: float | None = None
    closed_at: float | None = None
    expires_at: float | None = Field(default=None, description="When the lease lapses.")
    reason: str | None = Field(default=None, description="Why it expired, failed or closed.")
    meta: dict[str, str] = Field(default_factory=dict, description="Metadata given at creation.")


class VM(_Wire):
    """One machine of a pool."""

    name: str
    pool: str
    state: str = Field(description="spawning, ready, in_use, releasing, terminating, ...")
    address: str | None = None
    ticket: str | None = Field(default=None, description="Id of the (first) ticket holding it.")
    tickets: list[str] = Field(
        default_factory=list,
        description="Every ticket holding it: up to its pool's slots (one when exclusive).",
    )
    load: int = Field(default=0, description="How many tickets hold it now.")
    exclusive: bool = Field(default=False, description="Held by an exclusive ticket.")
    sandbox: str | None = Field(default=None, description="Last sandbox it served.")
    uses: int = 0
    id_in_pool: int = 0
    connection: dict[str, str] = Field(
        default_factory=dict,
        description="How to reach it beyond its address (user, port, host_key, ...), from its "
        "backend.",
    )
    created_at: float | None = None
    state_since: float | None = None
    ready_at: float | None = None
    last_used_at: float | None = None
    livecheck_failures: int = 0
    machine_state: str | None = Field(
        default=None,
        description="The backend's own state of the machine (libvirt: WaitForLaunch, Powering "
        "up, Up, Paused, Powering down, Down), beside the pool state.",
    )
    reason: str | None = None
    hold_until: float | None = Field(
        default=None, description="While an operator holds it (or will once its ticket ends)."
    )
    external: bool = Field(
        default=False,
        description="Made elsewhere and registered, or being forgotten: never destroyed by "
        "corral; forgotten when it retires.",
    )


class PoolStats(_Wire):
    """Per-pool statistics (times in seconds, ``None`` without samples)."""

    spawn_p50: float | None = None
    spawn_p95: float | None = None
    spawn_attempts: int = 0
    spawn_failures: int = 0
    spawn_success_rate: float | None = None
    wait_p50: float | None = None
    wait_p95: float | None = None
    terminate_failures: int = 0
    livecheck_failures: int = 0
    wasted_spawns: int = Field(
        default=0,
        description="VMs spawned for a demand that went away, then terminated unused.",
    )
    recent_spawns: int = Field(default=0, description="How many latest spawns the next counts.")
    recent_spawn_failures: int = 0
    last_spawn_error: str | None = Field(default=None, description="Why the last spawn failed.")


class PoolStatus(_Wire):
    """A pool's limits, its VMs counted per state, its ticket queue and its statistics."""

    name: str
    backend: str
    tags: list[str] = Field(default_factory=list)
    max: int
    max_starting: int
    min_ready: int
    description: str | None = Field(default=None, description="The config's description.")
    mode: str = Field(default="active", description="active, paused or draining.")
    vms: dict[str, int] = Field(default_factory=dict, description="VM count per state.")
    waiting_tickets: int = 0
    assigned_tickets: int = 0
    stats: PoolStats = Field(default_factory=PoolStats)
    info: dict[str, JsonValue] = Field(default_factory=dict, description="Per-pool key/value info.")
    problem: str | None = Field(
        default=None,
        description="Why the pool is unhealthy (its recent spawns fail, with the last reason).",
    )


class PoolSummary(_Wire):
    """Body of ``GET /v1/summary``: the human-readable summary of pools and their VMs."""

    text: str


class Task(_Wire):
    """A durable operation of the task engine (SPEC §4)."""

    id: str
    verb: str
    state: str
    tag: str = ""
    priority: str = "medium"
    code: str = Field(default="ok", description="``ok``, or the stable code of the first error.")
    message: str = ""
    result: JsonValue = None
    recovery: str | None = None
    persist: str | None = None
    clean: str | None = None
    jobs_done: int = 0
    jobs_total: int = 0
    jobs: list[str] = Field(default_factory=list)
    recoveries: list[str] = Field(default_factory=list, description="Bottom first.")
    locks: dict[str, str] = Field(default_factory=dict)
    created_at: float | None = None
    updated_at: float | None = None


class LockHolder(_Wire):
    """A holder of a lock."""

    owner: str
    mode: str
    since: float = Field(description="Seconds on the server's monotonic clock.")
    token: int = Field(description="Fencing token of the grant.")


class LockWaiter(_Wire):
    """A request waiting in a lock's queue (queue order)."""

    owner: str
    mode: str
    since: float
    upgrade: bool = False


class LockStatus(_Wire):
    """One resource of the lock manager: its mode, holders and queue."""

    key: str
    mode: str | None = None
    token: int = Field(default=0, description="The newest fencing token issued for it.")
    holders: list[LockHolder] = Field(default_factory=list)
    queue: list[LockWaiter] = Field(default_factory=list)


class Host(_Wire):
    """One host of the cluster (``GET /v1/hosts``): its lease, incarnation and what it leads."""

    host_id: str
    incarnation: int
    alive: bool = Field(description="Whether its lease is current (dead once it lapsed).")
    address: str = ""
    version: str = ""
    config_hash: str = Field(default="", description="Digest of its pool configuration.")
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    leads: list[str] = Field(default_factory=list, description="Pools whose maintenance it leads.")
    tasks: int = Field(default=0, description="Unfinished tasks recorded as this incarnation's.")
    this: bool = Field(default=False, description="Whether it is the host that answered.")


class Health(_Wire):
    """Body of ``GET /healthz``."""

    status: str = "ok"
    version: str


# --- operators' controls (issue 12) ------------------------------------------------------------

MAX_HOLD = 7 * 24 * 3600.0
"""The longest hold an operator may ask for, in seconds."""


class HoldRequest(BaseModel):
    """Body of ``POST /v1/vms/{name}/hold``."""

    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(
        default=24 * 3600.0, gt=0, le=MAX_HOLD, description="How long to keep the VM."
    )


class AuditEntry(_Wire):
    """One operator action: who did what to which VM or pool, when."""

    at: float = Field(description="Wall-clock time (Unix).")
    actor: str = Field(description="The owner of the token that did it.")
    action: str = Field(description="terminate, hold, release-hold, paused, draining, ...")
    kind: str = Field(description="vm or pool.")
    target: str
    detail: str | None = None


class PoolMode(_Wire):
    """A pool's mode after ``pause``, ``resume`` or ``drain``."""

    pool: str
    mode: str = Field(description="active, paused or draining.")


class DrainResult(_Wire):
    """Answer of ``POST /v1/pools/{name}/drain``."""

    pool: str
    dry_run: bool = False
    terminated: list[str] = Field(
        default_factory=list,
        description="Idle VMs terminated now (with dry_run: the ones that would be).",
    )


class ReconcileReport(_Wire):
    """What reconciliation of one pool found (``GET /v1/reconcile``: nothing was changed)."""

    pool: str
    sweep: list[str] = Field(default_factory=list, description="Leaked machines to terminate.")
    foreign: list[str] = Field(
        default_factory=list, description="Machines this store never created: left alone."
    )
    lost: list[str] = Field(default_factory=list, description="VMs the backend lost: marked.")
    gone: list[str] = Field(
        default_factory=list, description="Terminating VMs the backend no longer has."
    )
    orphans: list[str] = Field(
        default_factory=list, description="VMs stuck without a task: to terminate."
    )


class ReloadResult(_Wire):
    """Answer of ``POST /v1/config/reload``."""

    added: list[str] = Field(default_factory=list)
    changed: list[str] = Field(default_factory=list)
    removed: list[str] = Field(
        default_factory=list, description="Pools now draining; gone once empty."
    )
    restart_needed: list[str] = Field(
        default_factory=list, description="Changed keys that apply only after a restart."
    )


class CommandLogEntry(_Wire):
    """One backend command run for a VM (``GET /v1/vms/{name}/logs``): its output (capped),
    exit status (``null``: killed on its timeout or not started) and duration in seconds."""

    id: int = Field(description="Increases with every record: follow a log with ``after=``.")
    vm: str
    pool: str
    command: str = Field(description="new, delete, livecheck or release.")
    argv: list[str] = Field(default_factory=list)
    exit_status: int | None = None
    duration: float = 0.0
    stdout: str = Field(default="", description="Its first 16 KiB.")
    stderr: str = Field(default="", description="Its last 16 KiB.")
    at: float = Field(default=0.0, description="When it ended (wall clock, Unix).")


class RegisterRequest(BaseModel):
    """Body of ``POST /v1/vms``: a machine made elsewhere joins a pool (after a livecheck)."""

    model_config = ConfigDict(extra="forbid")

    pool: str = Field(min_length=1, max_length=255)
    name: str = Field(min_length=1, max_length=128, description="Not in a pool's <pool>-<n> form.")
    address: str = Field(min_length=1, max_length=253, description="IP address or host name.")


class Machine(_Wire):
    """A static pool's machine (answer of ``POST /v1/vms/{name}/return``)."""

    name: str
    pool: str
    address: str
    state: str = Field(description="free, reserved, maintenance or retiring.")
    vm: str | None = Field(default=None, description="The VM (reservation) holding it.")
    reason: str | None = Field(default=None, description="Why it is in maintenance.")
    since: float | None = None
    attrs: dict[str, JsonValue] = Field(default_factory=dict)


class MaintenanceRequest(BaseModel):
    """Body of ``POST /v1/vms/{name}/maintenance``."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000, description="Why it leaves service.")


class InfoValue(BaseModel):
    """Body of ``PUT /v1/pools/{name}/info/{key}``."""

    model_config = ConfigDict(extra="forbid")

    value: JsonValue = Field(description="Any JSON value but null (DELETE removes a key).")


class PoolInfoEntry(_Wire):
    """One per-pool info pair (``GET``/``PUT /v1/pools/{name}/info/{key}``)."""

    pool: str
    key: str
    value: JsonValue = None
