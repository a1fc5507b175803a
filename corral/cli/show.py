"""``corral vm show``, ``corral ticket show`` and ``corral pool show``: one object in detail.

Each prints ``field: value`` lines for people (empty fields left out) or the API's JSON with
``--json``. This module must not change anything on the server.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

import typer

from corral.cli import common, operate, output
from corral.cli.common import Json, Token, Url, handle_errors
from corral.client import core, models


def details(title: str, fields: Iterable[tuple[str, object]]) -> None:
    """Print ``title`` then one ``  field: value`` line per field that has a value."""
    output.console.print(title, markup=False)
    for name, value in fields:
        if value is None or value == "" or value == [] or value == {}:
            continue
        output.console.print(f"  {name}: {value}", markup=False)


def _when(timestamp: float | None) -> str:
    return "" if timestamp is None else output.when(timestamp)


def render_vm(vm: models.VM) -> None:
    """A VM in detail."""
    details(
        f"VM {vm.name}",
        [
            ("pool", vm.pool),
            ("state", vm.state),
            ("machine state", vm.machine_state),
            ("since", _when(vm.state_since)),
            ("address", vm.address),
            ("connection", common.meta_text(vm.connection)),
            ("ticket", vm.ticket if len(vm.tickets) < 2 else None),
            ("tickets", ", ".join(vm.tickets) if len(vm.tickets) > 1 else None),
            ("load", _load(vm)),
            ("sandbox", vm.sandbox),
            ("uses", vm.uses),
            ("number in pool", vm.id_in_pool),
            ("created", _when(vm.created_at)),
            ("ready since", _when(vm.ready_at)),
            ("last used", _when(vm.last_used_at)),
            ("livecheck failures", vm.livecheck_failures or None),
            ("reason", vm.reason),
            ("held until", _when(vm.hold_until)),
            ("external", "yes: corral never destroys it" if vm.external else None),
        ],
    )


def render_ticket(ticket: models.Ticket) -> None:
    """A ticket in detail, its metadata included."""
    details(
        f"ticket {ticket.id}",
        [
            ("owner", ticket.owner),
            ("state", ticket.state),
            ("pool", ticket.pool),
            ("tags", ", ".join(ticket.tags)),
            ("sandbox", ticket.sandbox),
            ("priority", ticket.priority),
            ("meta", common.meta_text(ticket.meta)),
            ("count", ticket.count if ticket.count > 1 else None),
            ("requests", _entries(ticket) if ticket.requests else None),
            (
                "exclusive",
                "yes: whole VMs, shared with no other ticket" if ticket.exclusive else None,
            ),
            ("vm", ticket.vm if len(ticket.vms) < 2 else None),
            ("address", ticket.address if len(ticket.vms) < 2 else None),
            ("vms", _vms(ticket) if len(ticket.vms) > 1 else None),
            ("connection", common.meta_text(ticket.connection)),
            ("created", _when(ticket.created_at)),
            ("assigned at", _when(ticket.assigned_at)),
            ("closed at", _when(ticket.closed_at)),
            ("lease", None if ticket.ttl is None else f"{ticket.ttl:g} s"),
            ("expires", _when(ticket.expires_at)),
            ("reason", ticket.reason),
        ],
    )


def _load(vm: models.VM) -> str | None:
    """How many tickets hold a VM, said only when it holds more than one or an exclusive one."""
    if vm.exclusive:
        return f"{vm.load} (exclusive)"
    return str(vm.load) if vm.load > 1 else None


def _entries(ticket: models.Ticket) -> str:
    """A list ticket's entries as asked for, in order: ``2 of pool x86; 1 tagged s390x``."""
    return "; ".join(
        f"{e.count} of pool {e.pool}" if e.pool else f"{e.count} tagged {', '.join(e.tags)}"
        for e in ticket.requests
    )


def _vms(ticket: models.Ticket) -> str:
    return ", ".join(
        name + (f" at {address}" if address else "")
        for name, address in common.with_addresses(ticket)
    )


def render_pool(pool: models.PoolStatus) -> None:
    """A pool in detail: limits, VMs per state, queue, statistics, problem and info."""
    s = pool.stats
    vms = ", ".join(f"{state} {n}" for state, n in sorted(pool.vms.items()) if n) or "none"
    rate = None if s.spawn_success_rate is None else f"{s.spawn_success_rate:.0%}"
    details(
        f"pool {pool.name}",
        [
            ("health", f"FAILING: {pool.problem}" if pool.problem else "ok"),
            ("description", pool.description),
            ("mode", pool.mode),
            ("backend", pool.backend),
            ("tags", ", ".join(pool.tags)),
            (
                "limits",
                f"max {pool.max}, max_starting {pool.max_starting}, min_ready {pool.min_ready}",
            ),
            ("VMs", vms),
            ("tickets", f"{pool.waiting_tickets} waiting, {pool.assigned_tickets} assigned"),
            ("spawn time", _pair(s.spawn_p50, s.spawn_p95)),
            (
                "spawns",
                f"{s.spawn_attempts} attempted, {s.spawn_failures} failed"
                + ("" if rate is None else f" ({rate} succeeded)")
                + f", {s.wasted_spawns} wasted (terminated unused)",
            ),
            ("last spawn error", s.last_spawn_error),
            ("allocation wait", _pair(s.wait_p50, s.wait_p95)),
            ("terminate failures", s.terminate_failures or None),
            ("livecheck failures", s.livecheck_failures or None),
            ("info", ", ".join(f"{k}={v}" for k, v in sorted(pool.info.items()))),
        ],
    )


def _pair(p50: float | None, p95: float | None) -> str | None:
    if p50 is None:
        return None
    return f"p50 {p50:.2f} s, p95 {p95 or p50:.2f} s"


@handle_errors
def vm_show(
    name: Annotated[str, typer.Argument(help="The VM's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Show one VM: state and since when, address, ticket, sandbox, uses, failure reason,
    operators' latest actions on it (admin)."""
    common.show(url, token, json, lambda c: c.get_vm(name), render_vm)
    if not json:
        operate.audit_of(url, token, vm=name)


@handle_errors
def ticket_show(
    ticket_id: Annotated[str, typer.Argument(help="The ticket id.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Show one ticket: state, VM and address, lease, metadata (users see their own; the
    owner's look renews the lease)."""
    common.show(url, token, json, lambda c: c.get_ticket(ticket_id), render_ticket)


@handle_errors
def pool_show(
    name: Annotated[str, typer.Argument(help="The pool's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Show one pool: health (why it fails), limits, VMs per state, queue, statistics, info,
    operators' latest actions on it (admin)."""
    common.show(url, token, json, lambda c: c.get_pool(name), render_pool)
    if not json:
        operate.audit_of(url, token, pool=name)
