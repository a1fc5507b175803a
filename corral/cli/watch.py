"""``corral events`` and ``corral vm logs NAME [--follow]``: watching the server as it works.

``events`` prints the event stream (``GET /v1/events``) one line per event (``--json``: one JSON
object per line), reconnecting with ``Last-Event-ID`` when the stream breaks; ``vm logs`` prints
what the backend's commands printed for one VM and, with ``--follow``, the new ones until the VM
is gone. This module must not change anything on the server, and imports no server-side module.
"""

from __future__ import annotations

import json as jsonlib
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from typing import Annotated

import typer

from corral import exceptions
from corral.cli import common, output
from corral.cli.common import Json, Token, Url, handle_errors
from corral.client import Client, core, models, sse
from corral.pools.lifecycle import DEAD_VM_STATES, values

FOLLOW_INTERVAL = 1.0
"""Seconds between two reads of a followed VM's log."""

PAGE = 500
"""Records asked for per read."""

DEAD = frozenset(values(DEAD_VM_STATES))


def _emit(line: str) -> None:
    # one write and a flush per line: a pipe (``| grep``) sees each event as it comes
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


# --- events ------------------------------------------------------------------------------------


def event_line(event: sse.ServerEvent) -> str:
    """One line about ``event`` for people: time, kind, object, state and the useful fields."""
    if event.event == "resync":
        return f"-- resync: {event.reason or 'events were lost'}: re-read the state"
    if event.event == "dropped":
        return f"-- the server dropped this stream: {event.reason or 'no reason given'}"
    data = event.data if isinstance(event.data, dict) else {}
    at = data.get("at")
    stamp = output.when(at) if isinstance(at, int | float) else "--:--:--"
    line = f"{stamp} {event.event} {event.object_id or '?'} {event.state or ''}".rstrip()
    inner = data.get("data")
    fields: list[str] = []
    if isinstance(inner, dict):
        if event.event == "pool":
            vms = inner.get("vms")
            if isinstance(vms, dict):
                fields += [f"{state}={count}" for state, count in sorted(vms.items())]
            fields += [f"{k}={inner[k]}" for k in ("waiting", "assigned") if k in inner]
            if inner.get("problem"):
                fields.append(f"problem={inner['problem']!r}")
        else:
            for key in ("pool", "vm", "ticket", "verb", "tag", "reason"):
                value = inner.get(key)
                if value is not None:
                    fields.append(f"{key}={value}")
    owner = data.get("owner")
    if isinstance(owner, str):
        fields.append(f"owner={owner}")
    return " ".join([line, *fields])


def shown(event: sse.ServerEvent, pool: str | None) -> bool:
    """Whether ``event`` passes the ``--pool`` filter (the stream's own events always do)."""
    return pool is None or event.event in sse.CONTROL or event.pool == pool


def watch_events(
    stream: Iterator[sse.ServerEvent],
    *,
    json: bool,
    pool: str | None,
    count: int | None,
    emit: Callable[[str], None] = _emit,
) -> int:
    """Print the events of ``stream`` that pass the filter, up to ``count`` of them (not
    counting the stream's own ``resync``/``dropped``); how many object events were printed."""
    printed = 0
    if count == 0:
        return 0
    for event in stream:
        if not shown(event, pool):
            continue
        if json:
            emit(jsonlib.dumps(event.to_json(), separators=(",", ":")))
        else:
            emit(event_line(event))
        if event.event not in sse.CONTROL:
            printed += 1
            if count is not None and printed >= count:
                break
    return printed


@handle_errors
def events(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    kind: Annotated[
        list[str] | None,
        typer.Option(
            "--kind",
            help="Only these kinds: ticket, vm, task, pool (repeatable or comma-separated).",
            show_default=False,
        ),
    ] = None,
    pool: Annotated[
        str | None, typer.Option("--pool", help="Only the events of this pool.")
    ] = None,
    since: Annotated[
        int | None,
        typer.Option(
            "--since",
            min=0,
            help="Start after this event id (what the server still keeps, or a resync).",
        ),
    ] = None,
    count: Annotated[
        int | None, typer.Option("--count", min=0, help="Stop after this many events.")
    ] = None,
    json: Json = False,
) -> None:
    """Print the server's events as they happen: tickets, VMs, tasks and pool counts (a user
    token sees its own tickets and the pools). Runs until interrupted (or --count events);
    a broken stream is reopened where it stopped, and a 'resync' line says when events were
    lost (re-read the state). With --json: one JSON object per line."""
    kinds = common.split_list(kind)
    unknown = sorted(set(kinds or ()) - set(sse.KINDS))
    if unknown:
        raise exceptions.InvalidInput(f"--kind: unknown {unknown} (known: {', '.join(sse.KINDS)})")
    with common.client(url, token) as c:
        stream = c.events(last_id=since, kinds=kinds or None)
        try:
            watch_events(stream, json=json, pool=pool, count=count)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()


# --- command logs ------------------------------------------------------------------------------


def log_lines(entry: models.CommandLogEntry) -> list[str]:
    """A command's record for people: a header line, the command, then its stdout and stderr."""
    status = "killed (timeout)" if entry.exit_status is None else f"exit {entry.exit_status}"
    lines = [
        f"== {entry.command} #{entry.id} at {output.when(entry.at)}: {status}, "
        f"{entry.duration:.2f} s",
        "$ " + shlex.join(entry.argv),
    ]
    for name, text in (("stdout", entry.stdout), ("stderr", entry.stderr)):
        if text:
            lines.append(f"{name}:")
            lines += ["  " + line for line in text.rstrip("\n").splitlines()]
    return lines


def follow_logs(
    client: Client,
    name: str,
    *,
    follow: bool,
    interval: float = FOLLOW_INTERVAL,
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[models.CommandLogEntry]:
    """The records of VM ``name``; with ``follow``, also the later ones until the VM is in a
    dead state (terminated, failed) and its last records were read."""
    after = 0
    while True:
        # read the state before the log: a record written before the VM died is then read
        # by this round or an earlier one, never missed
        done = not follow or client.get_vm(name).state in DEAD
        while True:
            batch = client.vm_logs(name, after=after, limit=PAGE)
            yield from batch
            if batch:
                after = batch[-1].id
            if len(batch) < PAGE:
                break
        if done:
            return
        sleep(interval)


@handle_errors
def vm_logs(
    name: Annotated[str, typer.Argument(help="The VM.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow", "-f", help="Keep printing new records until the VM is terminated."
        ),
    ] = False,
    interval: Annotated[
        float, typer.Option(help="Seconds between two reads with --follow.")
    ] = FOLLOW_INTERVAL,
    json: Json = False,
) -> None:
    """Print what the backend's commands (new, delete, livecheck, release) printed for VM NAME:
    argv, exit status, duration, stdout and stderr, oldest first (admin). With --json: one
    JSON object per record and line."""
    common.seconds("--interval", interval, at_least=0.05)
    printed = False
    with common.client(url, token) as c:
        try:
            for entry in follow_logs(c, name, follow=follow, interval=interval):
                printed = True
                if json:
                    _emit(jsonlib.dumps(entry.to_json(), ensure_ascii=False, separators=(",", ":")))
                else:
                    for line in log_lines(entry):
                        _emit(line)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if not printed and not json:
        # silence read as a hang or a failure: the fake backend (the demo's) runs no command
        _emit(f"no command logs for VM {name} (its backend ran no command for it)")


def register(app: typer.Typer, *, vm: typer.Typer) -> None:
    """Add these commands to the ``corral`` command's groups."""
    app.command("events")(events)
    vm.command("logs")(vm_logs)
