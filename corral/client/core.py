"""The I/O-free core shared by :class:`corral.client.Client` and :class:`corral.client.AsyncClient`.

Every API operation is described here once, as a :class:`Call`: the HTTP method, path, query and
body to send, and how to turn the response body into a typed result. Errors are decoded here too,
back into the same :mod:`corral.exceptions` class the server raised. The sync and async clients only
send calls (httpx's ``BaseClient`` pattern), so both behave identically by construction.

This module must not do I/O: no sockets, no threads, no event loop, no clock.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypedDict, TypeVar
from urllib.parse import quote

from corral import __version__, exceptions
from corral.client import models, plainhttp, record
from corral.client.records import TicketState
from corral.types import JSON

if TYPE_CHECKING:
    import ssl


T = TypeVar("T")
R = TypeVar("R", bound=record.Record)
T_co = TypeVar("T_co", covariant=True)

DEFAULT_URL = "http://127.0.0.1:8642"
"""Where ``corral serve`` listens unless told otherwise."""

MAX_WAIT_PER_REQUEST = 30.0
"""Longest single long-poll; longer waits are split so proxies never see an idle connection."""

Params = Mapping[str, str | int | float | Sequence[str]]


class Call(NamedTuple, Generic[T_co]):
    """One API request and the parser of its successful response."""

    method: str
    path: str
    parse: Callable[[JSON], T_co]
    params: Params = MappingProxyType({})
    body: JSON = None
    read_timeout: float | None = None
    """Extra seconds the server may legitimately take (long-polls)."""
    headers: Mapping[str, str] = MappingProxyType({})
    """Headers of this call only (the token's are added by the client)."""


def _segment(value: str, what: str) -> str:
    if not value:
        raise exceptions.InvalidInput(f"{what} must not be empty")
    return quote(value, safe="")


def _params(
    **values: str | int | float | Sequence[str] | None,
) -> dict[str, str | int | float | Sequence[str]]:
    return {k: v for k, v in values.items() if v is not None}


def _pairs(meta: Mapping[str, str] | None, what: str) -> list[str] | None:
    """``meta`` as the API's repeated ``KEY=VALUE`` query values (``None`` when empty)."""
    if not meta:
        return None
    if not isinstance(meta, Mapping):
        raise exceptions.InvalidInput(f"{what} must be a mapping of strings to strings")
    pairs = []
    for key, value in meta.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key:
            raise exceptions.InvalidInput(
                f"{what}: {key!r}: keys and values must be strings, keys non-empty without '='"
            )
        pairs.append(f"{key}={value}")
    return pairs


def _strings(value: str | Sequence[str] | None, what: str) -> list[str] | None:
    """One string or several as a list (``None`` stays ``None``)."""
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if not value:
        raise exceptions.InvalidInput(f"{what} must not be an empty list")
    return list(value)


_ticket = models.Ticket.from_json


def _list(model: type[R]) -> Callable[[JSON], list[R]]:
    """The parser of an answer that is a list of ``model``'s records."""
    return record.parser(record.list_of(record.record(model)), f"list[{model.__name__}]")


_tickets = _list(models.Ticket)
_vm = models.VM.from_json
_vms = _list(models.VM)
_pool = models.PoolStatus.from_json
_pools = _list(models.PoolStatus)
_task = models.Task.from_json
_tasks = _list(models.Task)
_locks = _list(models.LockStatus)
_hosts = _list(models.Host)
_health = models.Health.from_json
_summary = models.PoolSummary.from_json
_mode = models.PoolMode.from_json
_drain = models.DrainResult.from_json
_audit = _list(models.AuditEntry)
_reconcile = _list(models.ReconcileReport)
_reload = models.ReloadResult.from_json
_command_logs = _list(models.CommandLogEntry)
_machine = models.Machine.from_json
_info: Callable[[JSON], dict[str, JSON]] = record.parser(
    record.dict_of(record.anything), "dict[str, JsonValue]"
)
_info_entry = models.PoolInfoEntry.from_json


def _ignore(_: JSON) -> None:
    return None


# --- tickets -----------------------------------------------------------------------------------


class TicketArgs(TypedDict, total=False):
    """What a ticket asks for: the arguments of :func:`create_ticket` other than ``wait`` and
    ``key``, which the clients' ``create_ticket`` and ``acquire`` pass on."""

    pool: str | None
    """A VM of this pool, ..."""
    tags: Sequence[str]
    """... or of any pool carrying all these tags."""
    owner: str | None
    """Whose ticket (admins only; by default the token's owner)."""
    sandbox: str | None
    """Reuse VMs only within this sandbox."""
    priority: int
    """Higher is served first (default 0)."""
    ttl: float | None
    """The lease in seconds (default the pool's ``ticket_ttl``)."""
    meta: Mapping[str, str] | None
    """Small key/value metadata kept with the ticket and searchable."""
    count: int
    """How many VMs of one pool, assigned together and released together (default 1)."""
    exclusive: bool
    """Whole VMs, shared with no other ticket (on a pool whose VMs have several slots)."""
    requests: Sequence[Mapping[str, object]] | None
    """A list ticket instead of ``pool``/``tags``/``count``: entries such as
    ``{"pool": "x86", "count": 2}`` or ``{"tags": ["s390x"]}``, all assigned together (the
    ticket's ``vms`` in entry order) and released together."""


def _entries(requests: object) -> list[JSON]:
    """A list ticket's entries, checked before sending (``InvalidInput`` naming the entry) with
    :mod:`corral.wire`'s model of an entry (imported here: pydantic only for list tickets)."""
    from corral.wire import TicketEntry

    if isinstance(requests, str | bytes | Mapping) or not isinstance(requests, Sequence):
        raise exceptions.InvalidInput("requests must be a list of entries such as {'pool': 'x86'}")
    if not 1 <= len(requests) <= models.MAX_REQUESTS:
        raise exceptions.InvalidInput(
            f"requests must hold 1 to {models.MAX_REQUESTS} entries, not {len(requests)}"
        )
    found: list[JSON] = []
    for i, entry in enumerate(requests):
        if not isinstance(entry, Mapping):
            raise exceptions.InvalidInput(f"requests[{i}] must be a mapping, not {entry!r}")
        try:
            checked = TicketEntry.model_validate(dict(entry))
        except ValueError as exc:
            raise exceptions.InvalidInput(f"requests[{i}]: {exc}") from None
        if (checked.pool is None) == (not checked.tags):
            raise exceptions.InvalidInput(
                f"requests[{i}] must name a pool or give tags (one of the two, not both)"
            )
        found.append(checked.model_dump(mode="json", exclude_none=True))
    return found


def create_ticket(
    *,
    pool: str | None = None,
    tags: Sequence[str] = (),
    owner: str | None = None,
    sandbox: str | None = None,
    priority: int = 0,
    ttl: float | None = None,
    wait: float | None = None,
    key: str | None = None,
    meta: Mapping[str, str] | None = None,
    count: int = 1,
    exclusive: bool = False,
    requests: Sequence[Mapping[str, object]] | None = None,
) -> Call[models.Ticket]:
    """``POST /v1/tickets``: ask for one VM of ``pool`` or of a pool carrying ``tags``.

    With ``wait``, the server answers once the ticket is assigned or after ``wait`` seconds. With
    ``key`` (an idempotency key), a repeated create returns the first ticket, and
    :func:`find_ticket` finds it even when the answer was lost. ``meta`` is small key/value
    metadata kept with the ticket (:func:`list_tickets` and :func:`list_vms` search it).
    ``count`` VMs of one pool are assigned together (the ticket's ``vms``); ``exclusive`` asks
    for whole VMs on a pool whose VMs serve several tickets at once. ``requests`` (entries such as
    ``{"pool": "x86", "count": 2}`` or ``{"tags": ["s390x"]}``) asks for a list ticket instead of
    ``pool``/``tags``/``count``: every entry's VMs together, in entry order.
    """
    entries = None if requests is None else _entries(requests)
    if entries is not None and (pool is not None or tags or count != 1):
        raise exceptions.InvalidInput("requests cannot be combined with pool, tags or count")
    if isinstance(tags, str):
        raise exceptions.InvalidInput("tags must be a list of strings, not one string")
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= models.MAX_COUNT:
        raise exceptions.InvalidInput(
            f"count must be a whole number from 1 to {models.MAX_COUNT}, not {count!r}"
        )
    if not isinstance(exclusive, bool):
        raise exceptions.InvalidInput(f"exclusive must be True or False, not {exclusive!r}")
    if ttl is not None and (
        isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl)
    ):
        raise exceptions.InvalidInput(f"ttl must be a finite number of seconds, not {ttl!r}")
    if wait is not None and wait < 0:
        raise exceptions.InvalidInput(f"wait must be >= 0, got {wait}")
    wait = None if wait is None else min(wait, MAX_WAIT_PER_REQUEST)
    # The body as corral.wire.TicketRequest's model_dump(exclude_none=True) writes it; the
    # server validates it against that model (422 ``invalid_input`` naming the field), so the
    # client need not import pydantic to send it. An older server refuses a field it does not
    # know: meta, count and exclusive are sent only when they differ from their defaults.
    fields: dict[str, JSON] = {"pool": pool, "tags": list(tags), "owner": owner}
    fields |= {"sandbox": sandbox, "priority": priority, "ttl": ttl}
    fields = {name: value for name, value in fields.items() if value is not None}
    if entries is not None:
        del fields["tags"]
        fields["requests"] = entries
    if meta:
        fields["meta"] = dict(meta)
    if count != 1:
        fields["count"] = count
    if exclusive:
        fields["exclusive"] = True
    body: JSON = fields
    return Call(
        "POST",
        "/v1/tickets",
        _ticket,
        body=body,
        params=_params(wait=wait),
        read_timeout=wait,
        headers={} if key is None else {"Idempotency-Key": key},
    )


def check_request(request: TicketArgs) -> None:
    """Check a ticket request as the server will, without sending it: the body
    :func:`create_ticket` makes, read by :mod:`corral.wire`'s ``TicketRequest`` as the server
    reads it (pydantic's ``ValidationError`` naming each bad field).

    The client leaves this check to the server (``InvalidInput`` naming the field), since it
    imports pydantic, about 0.1 s of CPU; the ``corral`` command, which words the error by
    its options, calls it before it sends anything.
    """
    from corral.wire import TicketRequest

    TicketRequest.model_validate_json(json.dumps(create_ticket(**request).body))


def get_ticket(ticket_id: str, *, wait: float | None = None) -> Call[models.Ticket]:
    """``GET /v1/tickets/{id}``; with ``wait``, long-poll up to that many seconds for assignment."""
    if wait is not None and wait < 0:
        raise exceptions.InvalidInput(f"wait must be >= 0, got {wait}")
    wait = None if wait is None else min(wait, MAX_WAIT_PER_REQUEST)
    return Call(
        "GET",
        f"/v1/tickets/{_segment(ticket_id, 'ticket id')}",
        _ticket,
        params=_params(wait=wait),
        read_timeout=wait,
    )


def renew_ticket(ticket_id: str) -> Call[models.Ticket]:
    """``POST /v1/tickets/{id}/renew``: extend the ticket's lease."""
    return Call("POST", f"/v1/tickets/{_segment(ticket_id, 'ticket id')}/renew", _ticket)


def close_ticket(ticket_id: str) -> Call[models.Ticket]:
    """``POST /v1/tickets/{id}/close``: give the VM back (or cancel a waiting ticket)."""
    return Call("POST", f"/v1/tickets/{_segment(ticket_id, 'ticket id')}/close", _ticket)


def list_tickets(
    *,
    owner: str | None = None,
    state: str | Sequence[str] | None = None,
    meta: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> Call[list[models.Ticket]]:
    """``GET /v1/tickets``: tickets by priority then age, optionally of one owner, in one
    state or several, carrying every ``meta`` pair, at most ``limit`` of them."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise exceptions.InvalidInput(f"limit must be a positive integer, got {limit!r}")
    params = _params(
        owner=owner, state=_strings(state, "state"), meta=_pairs(meta, "meta"), limit=limit
    )
    return Call("GET", "/v1/tickets", _tickets, params=params)


def find_ticket(key: str, *, owner: str | None = None) -> Call[models.Ticket]:
    """``GET /v1/tickets/by-key/{key}``: the ticket ``owner`` (by default the caller) created with
    idempotency ``key`` (:class:`NotFound` when there is none, or the server knows no keys)."""
    return Call(
        "GET", f"/v1/tickets/by-key/{_segment(key, 'key')}", _ticket, params=_params(owner=owner)
    )


# --- pools and VMs -----------------------------------------------------------------------------


def list_pools() -> Call[list[models.PoolStatus]]:
    """``GET /v1/pools``."""
    return Call("GET", "/v1/pools", _pools)


def get_pool(name: str) -> Call[models.PoolStatus]:
    """``GET /v1/pools/{name}``."""
    return Call("GET", f"/v1/pools/{_segment(name, 'pool name')}", _pool)


def list_vms(
    *,
    pool: str | None = None,
    state: str | None = None,
    ticket_meta: Mapping[str, str] | None = None,
) -> Call[list[models.VM]]:
    """``GET /v1/vms``: VMs, optionally of one pool, in one state, or held by open tickets
    carrying every ``ticket_meta`` pair."""
    params = _params(pool=pool, state=state, ticket_meta=_pairs(ticket_meta, "ticket_meta"))
    return Call("GET", "/v1/vms", _vms, params=params)


def get_vm(name: str) -> Call[models.VM]:
    """``GET /v1/vms/{name}``."""
    return Call("GET", f"/v1/vms/{_segment(name, 'VM name')}", _vm)


def terminate_vm(name: str, *, if_states: Sequence[str] | None = None) -> Call[models.VM]:
    """``POST /v1/vms/{name}/terminate``; with ``if_states``, only a VM in one of those states
    (:class:`VMStateMismatch` otherwise, and nothing changes)."""
    params = _params(if_state=_strings(if_states, "if_states"))
    return Call("POST", f"/v1/vms/{_segment(name, 'VM name')}/terminate", _vm, params=params)


def vm_logs(name: str, *, after: int = 0, limit: int = 100) -> Call[list[models.CommandLogEntry]]:
    """``GET /v1/vms/{name}/logs``: the backend commands run for the VM with an id above
    ``after``, oldest first, at most ``limit``."""
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise exceptions.InvalidInput(f"after must be a record id >= 0, not {after!r}")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise exceptions.InvalidInput(f"limit must be a positive integer, not {limit!r}")
    params = _params(after=after or None, limit=limit)
    return Call("GET", f"/v1/vms/{_segment(name, 'VM name')}/logs", _command_logs, params=params)


def terminate_pool_vms(
    pool: str,
    *,
    states: Sequence[str] | None = None,
    unused: bool = False,
    dry_run: bool = False,
) -> Call[list[models.VM]]:
    """``POST /v1/pools/{pool}/terminate``: terminate a pool's VMs in bulk (all alive ones, by
    state, or the unused ones); with ``dry_run``, which ones, changing nothing."""
    params = _params(
        state=_strings(states, "states"),
        unused="true" if unused else None,
        dry_run="true" if dry_run else None,
    )
    return Call("POST", f"/v1/pools/{_segment(pool, 'pool')}/terminate", _vms, params=params)


def summary(*, pool: str | None = None) -> Call[models.PoolSummary]:
    """``GET /v1/summary``: every pool (or one) and its VMs as human-readable text."""
    return Call("GET", "/v1/summary", _summary, params=_params(pool=pool))


# --- operators' controls -----------------------------------------------------------------------


def pause_pool(name: str) -> Call[models.PoolMode]:
    """``POST /v1/pools/{name}/pause``: stop preallocating the pool."""
    return Call("POST", f"/v1/pools/{_segment(name, 'pool name')}/pause", _mode)


def resume_pool(name: str) -> Call[models.PoolMode]:
    """``POST /v1/pools/{name}/resume``: undo a pause or a drain."""
    return Call("POST", f"/v1/pools/{_segment(name, 'pool name')}/resume", _mode)


def drain_pool(name: str, *, dry_run: bool = False) -> Call[models.DrainResult]:
    """``POST /v1/pools/{name}/drain``: stop preallocating, terminate idle VMs, let VMs in use
    finish; with ``dry_run``, only say which idle VMs would go."""
    params = {"dry_run": "true"} if dry_run else {}
    return Call("POST", f"/v1/pools/{_segment(name, 'pool name')}/drain", _drain, params=params)


def hold_vm(name: str, *, seconds: float = 24 * 3600.0) -> Call[models.VM]:
    """``POST /v1/vms/{name}/hold``: keep a VM for debugging for ``seconds``."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds <= models.MAX_HOLD
    ):
        raise exceptions.InvalidInput(
            f"hold duration must be a number of seconds in (0, {models.MAX_HOLD:g}], "
            f"got {seconds!r}"
        )
    body: JSON = {"seconds": float(seconds)}
    return Call("POST", f"/v1/vms/{_segment(name, 'VM name')}/hold", _vm, body=body)


def release_hold(name: str) -> Call[models.VM]:
    """``POST /v1/vms/{name}/release-hold``: end a VM's hold."""
    return Call("POST", f"/v1/vms/{_segment(name, 'VM name')}/release-hold", _vm)


def audit(
    *, vm: str | None = None, pool: str | None = None, limit: int | None = None
) -> Call[list[models.AuditEntry]]:
    """``GET /v1/audit``: operators' actions, newest first, of one VM or one pool if given."""
    if vm is not None and pool is not None:
        raise exceptions.InvalidInput("give vm or pool, not both")
    if limit is not None and (
        isinstance(limit, bool) or not isinstance(limit, int) or not 0 < limit <= 10_000
    ):
        raise exceptions.InvalidInput(f"limit must be an integer in 1..10000, got {limit!r}")
    return Call("GET", "/v1/audit", _audit, params=_params(vm=vm, pool=pool, limit=limit))


def reconcile_dry_run() -> Call[list[models.ReconcileReport]]:
    """``GET /v1/reconcile``: what reconciliation would terminate or mark now (changes nothing)."""
    return Call("GET", "/v1/reconcile", _reconcile)


def reload_config() -> Call[models.ReloadResult]:
    """``POST /v1/config/reload``: the server re-reads and applies its configuration file."""
    return Call("POST", "/v1/config/reload", _reload)


# --- machines made elsewhere, forgotten, returned; pool info (issue 15) -------------------------


def register_vm(pool: str, name: str, address: str) -> Call[models.VM]:
    """``POST /v1/vms``: a machine made elsewhere joins ``pool`` once it passes a livecheck."""
    for value, what in ((pool, "pool"), (name, "VM name"), (address, "address")):
        if not isinstance(value, str) or not value:
            raise exceptions.InvalidInput(f"{what} must be a non-empty string")
    body: JSON = {"pool": pool, "name": name, "address": address}
    return Call("POST", "/v1/vms", _vm, body=body)


def forget_vm(name: str, *, force: bool = False) -> Call[models.VM]:
    """``POST /v1/vms/{name}/forget``: stop tracking a VM without touching it (``force``: also
    one in use, whose ticket fails)."""
    params = _params(force="true" if force else None)
    return Call("POST", f"/v1/vms/{_segment(name, 'VM name')}/forget", _vm, params=params)


def return_machine(name: str) -> Call[models.Machine]:
    """``POST /v1/vms/{name}/return``: a static pool's machine leaves maintenance."""
    return Call("POST", f"/v1/vms/{_segment(name, 'machine name')}/return", _machine)


def machine_maintenance(name: str, reason: str) -> Call[models.Machine]:
    """``POST /v1/vms/{name}/maintenance``: a static pool's machine leaves service."""
    if not isinstance(reason, str) or not reason.strip():
        raise exceptions.InvalidInput("a maintenance reason must be non-empty text")
    path = f"/v1/vms/{_segment(name, 'machine name')}/maintenance"
    return Call("POST", path, _machine, body={"reason": reason})


def get_pool_info(pool: str) -> Call[dict[str, JSON]]:
    """``GET /v1/pools/{pool}/info``: every key/value pair of the pool's info."""
    return Call("GET", f"/v1/pools/{_segment(pool, 'pool')}/info", _info)


def get_pool_info_key(pool: str, key: str) -> Call[models.PoolInfoEntry]:
    """``GET /v1/pools/{pool}/info/{key}`` (``NotFound`` when the key is not set)."""
    path = f"/v1/pools/{_segment(pool, 'pool')}/info/{_segment(key, 'info key')}"
    return Call("GET", path, _info_entry)


def set_pool_info(pool: str, key: str, value: JSON) -> Call[models.PoolInfoEntry]:
    """``PUT /v1/pools/{pool}/info/{key}`` with a JSON value; ``None`` removes the key
    (``DELETE``)."""
    path = f"/v1/pools/{_segment(pool, 'pool')}/info/{_segment(key, 'info key')}"
    if value is None:
        return Call("DELETE", path, _info_entry)
    return Call("PUT", path, _info_entry, body={"value": value})


# --- tasks, locks, health ----------------------------------------------------------------------


def list_tasks(*, state: str | None = None, tag: str | None = None) -> Call[list[models.Task]]:
    """``GET /v1/tasks``: tasks, optionally in one state or with one tag."""
    return Call("GET", "/v1/tasks", _tasks, params=_params(state=state, tag=tag))


def get_task(task_id: str) -> Call[models.Task]:
    """``GET /v1/tasks/{id}``."""
    return Call("GET", f"/v1/tasks/{_segment(task_id, 'task id')}", _task)


def stop_task(task_id: str, *, force: bool = False) -> Call[models.Task]:
    """``POST /v1/tasks/{id}/stop`` (``force`` for a task in recovery)."""
    params = {"force": "true"} if force else {}
    return Call("POST", f"/v1/tasks/{_segment(task_id, 'task id')}/stop", _task, params=params)


def rollback_task(task_id: str) -> Call[models.Task]:
    """``POST /v1/tasks/{id}/rollback``: roll back a done task (manual recovery)."""
    return Call("POST", f"/v1/tasks/{_segment(task_id, 'task id')}/rollback", _task)


def clean_task(task_id: str) -> Call[None]:
    """``DELETE /v1/tasks/{id}``: forget a done task."""
    return Call("DELETE", f"/v1/tasks/{_segment(task_id, 'task id')}", _ignore)


def list_locks() -> Call[list[models.LockStatus]]:
    """``GET /v1/locks``."""
    return Call("GET", "/v1/locks", _locks)


def list_hosts() -> Call[list[models.Host]]:
    """``GET /v1/hosts``."""
    return Call("GET", "/v1/hosts", _hosts)


def health() -> Call[models.Health]:
    """``GET /healthz``."""
    return Call("GET", "/healthz", _health)


# --- requests and responses --------------------------------------------------------------------


def headers(token: str | None) -> dict[str, str]:
    """The headers every request carries."""
    result = {"Accept": "application/json", "User-Agent": f"corral-client/{__version__}"}
    if token:
        result["Authorization"] = f"Bearer {token}"
    return result


def verify(url: str) -> ssl.SSLContext | bool:
    """What the HTTP client checks TLS certificates with: the default authorities for an
    ``https`` URL; for a plain ``http`` URL, a verifying context that trusts no authority.

    Loading the default bundle costs about 30 ms, paid by every ``corral`` command, although
    nothing is encrypted on an ``http`` URL. The empty context fails closed: were a request ever
    to reach an ``https`` address through it, its certificate would be refused, not accepted.
    """
    if url.lower().startswith("https:"):
        return True
    import ssl  # here: only httpx asks, and the standard library's transport needs none

    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default


def request(call: Call[object], headers: Mapping[str, str], timeout: float) -> dict[str, Any]:
    """The keyword arguments of ``httpx.Client.request`` (or the async one) that send ``call``;
    ``timeout`` is the client's, lengthened by the call's long-poll."""
    return {
        "method": call.method,
        "url": call.path,
        "params": dict(call.params),
        "json": call.body,
        "headers": {**headers, **call.headers},
        "timeout": timeout + (call.read_timeout or 0.0),
    }


@contextmanager
def transport_errors(url: str, timeout: float) -> Iterator[None]:
    """Translate the transport's failures to reach ``url`` (httpx's, or
    :mod:`~corral.client.plainhttp`'s) into :class:`ServerUnreachable`.

    httpx is not imported here: a failure can only be httpx's if httpx was imported to send it.
    """
    try:
        yield
    except Exception as exc:
        httpx = sys.modules.get("httpx")
        if isinstance(exc, plainhttp.TransportTimeout) or (
            httpx is not None and isinstance(exc, httpx.TimeoutException)
        ):
            raise exceptions.ServerUnreachable(f"{url}: no answer within {timeout:g} s") from exc
        if isinstance(exc, plainhttp.TransportError) or (
            httpx is not None and isinstance(exc, httpx.HTTPError)
        ):
            raise exceptions.ServerUnreachable(f"cannot reach corral at {url}: {exc}") from exc
        raise


def decode(status: int, content: bytes) -> JSON:
    """The JSON body of a response; raises a server error as its :mod:`corral.exceptions` class."""
    try:
        data: JSON = json.loads(content) if content else None
    except ValueError:
        data = None
        if status < 400:
            raise exceptions.CorralError(
                f"the server answered {status} with a body that is not JSON"
            ) from None
    if status >= 400:
        raise error_from(status, data, content)
    return data


def error_from(status: int, data: JSON, content: bytes = b"") -> exceptions.CorralError:
    """The exception for an error response (the same class the server raised when known)."""
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            code, message = error.get("code"), error.get("message")
            if isinstance(code, str) and isinstance(message, str):
                return exceptions.from_code(code, message)
    snippet = content[:200].decode("utf-8", "replace")
    return exceptions.CorralError(f"the server answered HTTP {status}: {snippet}")


def parse(call: Call[T], status: int, content: bytes) -> T:
    """The typed result of ``call`` from a response's status and body."""
    return call.parse(decode(status, content))


def renew_interval(ticket: models.Ticket, now: float) -> float:
    """How long to sleep before renewing ``ticket``: a third of what is left of its lease.

    ``now`` is wall-clock time (the server's ``expires_at`` is wall-clock). Without a lease the
    ticket never expires and renewing is a cheap keep-alive every minute.
    """
    if ticket.expires_at is None:
        lease = ticket.ttl if ticket.ttl is not None else 180.0
        return max(0.5, lease / 3)
    return max(0.5, (ticket.expires_at - now) / 3)


def assigned_or_raise(ticket: models.Ticket) -> models.Ticket:
    """``ticket`` if it holds a VM; :class:`TicketClosed` if it ended without one."""
    if ticket.state == TicketState.ASSIGNED:
        return ticket
    raise exceptions.TicketClosed(f"ticket {ticket.id} is {ticket.state}, it holds no VM")
