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
    "DrainResult",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "HoldRequest",
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

    model_config = ConfigDict(frozen=True, extra="ignore")


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

Text = Annotated[str, Field(min_length=1, max_length=255, pattern=NO_CONTROL)]
"""A name, owner or tag of a request: 1 to 255 characters, no control characters."""


class TicketRequest(BaseModel):
    """Body of ``POST /v1/tickets``: a request for one VM, by pool or by tags.

    Strict: ``"10"`` or ``true`` is not a number, a float is not a priority, and ``ttl`` is a
    finite number of seconds from :data:`MIN_TTL` to :data:`MAX_TTL`.
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


class Ticket(_Wire):
    """A request for one VM and, once assigned, the VM it holds."""

    id: str
    owner: str
    state: str = Field(description="waiting, assigned, closed, cancelled, expired or failed.")
    pool: str | None = None
    tags: list[str] = Field(default_factory=list)
    sandbox: str | None = None
    priority: int = 0
    ttl: float | None = Field(default=None, description="Lease length in seconds.")
    vm: str | None = Field(default=None, description="Name of the assigned VM.")
    address: str | None = Field(default=None, description="Address of the assigned VM.")
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
    ticket: str | None = Field(default=None, description="Id of the ticket holding it.")
    sandbox: str | None = Field(default=None, description="Last sandbox it served.")
    uses: int = 0
    id_in_pool: int = 0
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
