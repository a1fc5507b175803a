"""The operators' commands (issue 12): ``corral pool pause|resume|drain``, ``corral vm hold`` and
``release-hold``, ``corral audit``, ``corral reconcile --dry-run`` and ``corral config reload``.

Each calls one admin endpoint through the client and prints one line per result (or JSON with
``--json``); bad input is one ``error:`` line before anything is sent. This module must not
decide anything the server decides.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Annotated

import typer

from corral import exceptions
from corral.cli import common, output
from corral.cli.common import Json, Token, Url, handle_errors
from corral.client import core, models
from corral.pools.lifecycle import VMState

DEFAULT_HOLD = "24h"
"""How long ``corral vm hold`` keeps a VM unless told otherwise."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str, option: str = "--for") -> float:
    """``90m``, ``2h``, ``1d``, ``45s`` or plain seconds, in seconds (``InvalidInput`` naming
    ``option`` otherwise, or for a duration beyond the longest hold)."""
    found = _DURATION.fullmatch(text.strip().lower())
    if found is None:
        raise exceptions.InvalidInput(
            f"{option}: {text!r} is not a duration (use e.g. 90m, 2h, 1d or 45s)"
        )
    seconds = float(found.group(1)) * _UNITS[found.group(2)]
    if not math.isfinite(seconds) or seconds <= 0:
        raise exceptions.InvalidInput(f"{option}: must be longer than 0, got {text!r}")
    if seconds > models.MAX_HOLD:
        raise exceptions.InvalidInput(
            f"{option}: {text!r} is longer than the longest hold, {models.MAX_HOLD / 86400:g}d"
        )
    return seconds


def _mode_line(mode: models.PoolMode) -> str:
    return f"pool {mode.pool}: {mode.mode}"


def _stamp(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def audit_line(entry: models.AuditEntry) -> str:
    """One action of the audit trail as text."""
    detail = f" ({entry.detail})" if entry.detail else ""
    return f"{_stamp(entry.at)}  {entry.actor}  {entry.action} {entry.kind} {entry.target}{detail}"


def _audit_lines(entries: list[models.AuditEntry]) -> None:
    if not entries:
        output.console.print("no operator actions recorded", markup=False)
    for entry in entries:
        output.console.print(audit_line(entry), markup=False)


SHOWN_ACTIONS = 5
"""Operators' actions ``vm show`` and ``pool show`` print."""


def audit_of(
    url: str, token: str | None, *, vm: str | None = None, pool: str | None = None
) -> None:
    """Print the latest operators' actions on one VM or pool (``vm show``/``pool show``)."""
    with common.client(url, token) as c:
        entries = c.audit(vm=vm, pool=pool, limit=SHOWN_ACTIONS)
    if entries:
        output.console.print("  operators' actions (newest first):", markup=False)
    for entry in entries:
        output.console.print(f"    {audit_line(entry)}", markup=False)


# --- pools ---------------------------------------------------------------------------------------


@handle_errors
def pool_pause(
    name: Annotated[str, typer.Argument(help="The pool's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Stop preallocating a pool; its ready VMs still serve tickets (admin)."""
    common.show(url, token, json, lambda c: c.pause_pool(name), common.say(_mode_line))


@handle_errors
def pool_resume(
    name: Annotated[str, typer.Argument(help="The pool's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Undo a pause or a drain: the pool preallocates and reuses VMs again (admin)."""
    common.show(url, token, json, lambda c: c.resume_pool(name), common.say(_mode_line))


def _drained(result: models.DrainResult) -> None:
    verb = "would terminate" if result.dry_run else "terminating"
    names = ", ".join(result.terminated) or "no idle VM"
    state = "" if result.dry_run else "; draining (VMs in use finish first)"
    output.console.print(f"pool {result.pool}: {verb} {names}{state}", markup=False)


@handle_errors
def pool_drain(
    name: Annotated[str, typer.Argument(help="The pool's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Only print the idle VMs it would terminate.")
    ] = False,
    json: Json = False,
) -> None:
    """Drain a pool: stop preallocating, terminate its idle VMs now and every VM in use once its
    ticket ends, reusing nothing; 'corral pool resume' undoes it (admin)."""
    common.show(url, token, json, lambda c: c.drain_pool(name, dry_run=dry_run), _drained)


# --- VMs -----------------------------------------------------------------------------------------


def _held(vm: models.VM) -> str:
    until = "" if vm.hold_until is None else f" until {_stamp(vm.hold_until)}"
    if vm.state == VMState.HELD:
        return f"VM {vm.name} ({vm.pool}): held{until}"
    return f"VM {vm.name} ({vm.pool}): {vm.state}, kept once its ticket ends{until}"


@handle_errors
def vm_hold(
    name: Annotated[str, typer.Argument(help="The VM's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    for_: Annotated[
        str,
        typer.Option("--for", help="How long: 90m, 2h, 1d, ... (at most 7d)."),
    ] = DEFAULT_HOLD,
    json: Json = False,
) -> None:
    """Keep a VM for debugging (Nodepool's hold): a ready VM leaves service now, one in use is
    kept once its ticket ends; it is never reused and is terminated when the hold runs out or
    is released (admin)."""
    seconds = parse_duration(for_)
    common.show(url, token, json, lambda c: c.hold_vm(name, seconds=seconds), common.say(_held))


@handle_errors
def vm_release_hold(
    name: Annotated[str, typer.Argument(help="The VM's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """End a VM's hold: a held VM is terminated; one in use is no longer kept (admin)."""
    common.show(
        url,
        token,
        json,
        lambda c: c.release_hold(name),
        common.say(lambda v: f"VM {v.name} ({v.pool}): {v.state}, hold released"),
    )


# --- audit, reconcile, reload --------------------------------------------------------------------


@handle_errors
def audit(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    vm: Annotated[str | None, typer.Option("--vm", help="Only actions on this VM.")] = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Only actions on this pool.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (1-10000).")] = 50,
    json: Json = False,
) -> None:
    """Operators' actions, newest first: who terminated, drained, paused or held what, when
    (admin)."""
    common.show(url, token, json, lambda c: c.audit(vm=vm, pool=pool, limit=limit), _audit_lines)


_PLAN = (
    ("sweep", "terminate (leaked: the store does not hold it alive)"),
    ("lost", "mark failed (the backend no longer has it)"),
    ("gone", "mark terminated (its termination happened)"),
    ("orphans", "terminate (stuck without a task)"),
    ("foreign", "leave alone (this store never created it)"),
)


def _plans(reports: list[models.ReconcileReport]) -> None:
    quiet = True
    for report in reports:
        for field, what in _PLAN:
            names: list[str] = getattr(report, field)
            if names:
                quiet = False
                output.console.print(
                    f"pool {report.pool}: would {what}: {', '.join(names)}", markup=False
                )
    if quiet:
        output.console.print("nothing to do: the store and the backends agree", markup=False)


@handle_errors
def reconcile(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what it would do, changing nothing.")
    ] = False,
    json: Json = False,
) -> None:
    """Compare the store with every backend's inventory: what the leak sweep would terminate
    and which VMs it would mark (admin). The server reconciles on start and sweeps every
    sweep_interval by itself, so only --dry-run is offered here."""
    if not dry_run:
        raise exceptions.InvalidInput(
            "give --dry-run: the server reconciles on start and sweeps leaks every "
            "sweep_interval by itself"
        )
    common.show(url, token, json, lambda c: c.reconcile_dry_run(), _plans)


def _reloaded(result: models.ReloadResult) -> None:
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("added", result.added),
            ("changed", result.changed),
            ("removed (draining)", result.removed),
        )
        if names
    ]
    output.console.print(
        "configuration reloaded: " + ("; ".join(parts) or "no pool changed"), markup=False
    )


@handle_errors
def config_reload(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Make the running server re-read its configuration file (as SIGHUP does): an invalid file
    is refused with every problem and the running configuration stays (admin)."""
    common.show(url, token, json, lambda c: c.reload_config(), _reloaded)


def register(app: typer.Typer, *, vm: typer.Typer, pool: typer.Typer, config: typer.Typer) -> None:
    """Add these commands to the ``corral`` command's groups."""
    pool.command("pause")(pool_pause)
    pool.command("resume")(pool_resume)
    pool.command("drain")(pool_drain)
    vm.command("hold")(vm_hold)
    vm.command("release-hold")(vm_release_hold)
    app.command("audit")(audit)
    app.command("reconcile")(reconcile)
    config.command("reload")(config_reload)
