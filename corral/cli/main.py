"""The ``corral`` command: serve, acquire, release and inspect, over the HTTP API.

Every client command takes ``--url``/``CORRAL_URL`` and ``--token``/``CORRAL_TOKEN`` (after the
command, or before it: ``corral --url X tickets``) and prints a rich table for people or JSON with
``--json``; every failure is one line ``error: <code>: <message>`` on standard error and an exit
code per kind of failure (:class:`corral.cli.output.Exit`) — never a traceback.

This module must not contain controller or API logic: it parses arguments, calls the client (or,
for ``serve``/``config``/``db``, the server-side entry points) and prints.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from corral import exceptions
from corral.cli import (
    admin,
    common,
    entry,
    hosts,
    machines,
    operate,
    output,
    plain,
    resalloc,
    run,
    show,
    watch,
)
from corral.cli.common import Json, Token, Url, client, handle_errors, seconds
from corral.client import core, flows, models
from corral.pools.lifecycle import OPEN_TICKET_STATES, TicketState, VMState, values

HELP = (
    "corral keeps pools of VMs ready and hands them out.\n\n"
    "Start a server with 'corral serve' (no --config: a demo pool on the fake backend), then "
    "take a VM with 'corral acquire --pool demo' and give it back with 'corral release TICKET'. "
    "Every command has --help; every command but 'serve' prints JSON with --json."
)

EPILOG = (
    "Exit codes: 0 ok; 1 other failure; 2 bad usage; 3 invalid input or configuration; "
    "4 no valid token or not allowed; 5 not found; 6 state does not allow it; "
    "7 acquire timed out; 8 server unreachable; 9 port or database unavailable; "
    "10 'status': a pool is failing; a command run by 'acquire -- CMD' exits with its status. "
    "Errors print one line: 'error: CODE: message'."
)

app = typer.Typer(
    name="corral",
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
vm_app = typer.Typer(help="Act on one VM.", no_args_is_help=True)
task_app = typer.Typer(help="Act on one task of the engine.", no_args_is_help=True)
ticket_app = typer.Typer(help="Act on one ticket.", no_args_is_help=True)
pool_app = typer.Typer(help="Act on one pool.", no_args_is_help=True)
app.add_typer(vm_app, name="vm")
app.add_typer(task_app, name="task")
app.add_typer(ticket_app, name="ticket")
app.add_typer(pool_app, name="pool")
vm_app.command("show")(show.vm_show)
ticket_app.command("show")(show.ticket_show)
pool_app.command("show")(show.pool_show)
app.command("import-resalloc")(resalloc.import_resalloc)
app.command("hosts")(hosts.hosts)  # the cluster's hosts (issue 11)
app.add_typer(admin.config_app, name="config")
app.add_typer(admin.db_app, name="db")
app.command("serve")(admin.serve)
operate.register(app, vm=vm_app, pool=pool_app, config=admin.config_app)  # issue 12's controls
watch.register(app, vm=vm_app)  # corral events, corral vm logs
machines.register(vm=vm_app, pool=pool_app)  # issue 15: vm add/forget/return, pool info

Meta = Annotated[
    list[str] | None,
    typer.Option("--meta", help="KEY=VALUE (repeatable).", show_default=False),
]


def _entry(text: str) -> dict[str, object]:
    """One ``--request`` value: ``pool=NAME`` or ``tags=T`` (repeatable), with ``count=N``."""
    entry: dict[str, object] = {}
    tags: list[str] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or not value or key not in {"pool", "tags", "count"}:
            raise exceptions.InvalidInput(
                f"--request {text!r}: expected pool=NAME or tags=TAG (tags=... repeatable) "
                "and count=N, comma-separated"
            )
        if key in entry:
            raise exceptions.InvalidInput(f"--request {text!r}: {key} given twice")
        if key == "tags":
            tags.append(value)
        elif key == "count":
            if not value.isdigit():
                raise exceptions.InvalidInput(f"--request {text!r}: count must be a whole number")
            entry["count"] = int(value)
        else:
            entry["pool"] = value
    if tags:
        entry["tags"] = tags
    return entry


@app.command(context_settings={"allow_interspersed_args": False})
@handle_errors
def acquire(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    pool: Annotated[str | None, typer.Option("--pool", help="Take a VM of this pool.")] = None,
    tag: Annotated[
        list[str] | None, typer.Option("--tag", help="Any pool carrying this tag (repeatable).")
    ] = None,
    owner: Annotated[
        str | None, typer.Option(help="Owner (admins only; else the token's).")
    ] = None,
    sandbox: Annotated[str | None, typer.Option(help="Reuse VMs only within this sandbox.")] = None,
    priority: Annotated[
        int, typer.Option(help="Higher is served first (-1000000 to 1000000).")
    ] = 0,
    ttl: Annotated[
        float | None,
        typer.Option(
            help="Lease in seconds (default: the pool's ticket_ttl). Not renewed within it, "
            "the ticket expires and its VM is reclaimed; extend it with 'corral renew'."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Give up (exit 7) after this many seconds.")
    ] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            help="KEY=VALUE kept with the ticket and searchable (repeatable): "
            "'corral tickets --meta', 'corral vms --meta'.",
            show_default=False,
        ),
    ] = None,
    count: Annotated[
        int,
        typer.Option(
            "--count",
            help="Take this many VMs of one pool, all together (none until all are free), "
            "released together.",
        ),
    ] = 1,
    exclusive: Annotated[
        bool,
        typer.Option(
            "--exclusive",
            help="Whole VMs: on a pool whose VMs serve several tickets (slots), share them "
            "with none.",
        ),
    ] = False,
    request_entries: Annotated[
        list[str] | None,
        typer.Option(
            "--request",
            help="One entry of a list ticket (repeatable, not with --pool/--tag/--count): "
            "'pool=NAME[,count=N]' or 'tags=T[,tags=T2][,count=N]'; every entry's VMs are "
            "assigned together, listed in entry order, released together.",
            show_default=False,
        ),
    ] = None,
    json: Json = False,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run this command (after '--') while holding the VM, then release it.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Wait for a VM and print the ticket id, VM name, address and lease; or, given a command
    after '--', run it holding the VM and release the VM when it exits.

    The ticket stays open after the command exits, for its lease: the pool's ticket_ttl (900 s
    unless configured), or --ttl. Renew it with 'corral renew TICKET' before it lapses, and
    give the VM back with 'corral release TICKET'. While it waits, its long-polls keep the
    lease alive.

    With a command ('corral acquire --pool P -- ssh root@$CORRAL_ADDRESS make'), the command
    gets CORRAL_TICKET, CORRAL_VM, CORRAL_ADDRESS, CORRAL_OWNER (and CORRAL_POOL,
    CORRAL_META_<KEY> when known) in its environment, and every VM of a --count ticket in
    CORRAL_VMS and CORRAL_ADDRESSES (space-separated, in the same order); the lease is renewed
    while it runs;
    SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 and a SIGINT not from the terminal are passed on to it;
    the VM is released when it exits, also after Ctrl-C; and corral exits with its status
    (128+N when it died of signal N).
    """
    entries = None if not request_entries else [_entry(e) for e in request_entries]
    if entries is not None and (pool is not None or tag or count != 1):
        raise exceptions.InvalidInput("--request: not with --pool, --tag or --count")
    if entries is None and pool is None and not tag:
        raise exceptions.InvalidInput("give --pool, at least one --tag, or --request entries")
    if command and json:
        raise exceptions.InvalidInput("--json: not with a command (its output is the output)")
    seconds("--timeout", timeout)
    seconds("--ttl", ttl, at_least=None)  # the request model checks its range
    request = core.TicketArgs(
        pool=pool,
        tags=tag or (),
        owner=owner,
        sandbox=sandbox,
        priority=priority,
        ttl=ttl,
        meta=common.pairs("--meta", meta),
        count=count,
        exclusive=exclusive,
    )
    if entries is not None:
        del request["pool"], request["tags"], request["count"]
        request["requests"] = entries
    core.check_request(request)  # worded by option (the client would leave it to the server)
    if command:
        raise typer.Exit(_run(url, token, request, timeout, command))
    acquisition = flows.Acquisition(timeout=timeout, **request)
    with client(url, token) as c:
        try:
            with _spinner(not json, "waiting for a VM..."):
                ticket = c.run(acquisition.obtain(time.monotonic))
        except BaseException:
            # Nobody will use this ticket (timeout, Ctrl-C, an error): cancel it rather than
            # leave it queued, even if the create's answer never arrived.
            c.run(acquisition.release(quiet=True))
            raise
    if json:
        output.print_json(ticket)
        return
    output.line(common.ticket_line(ticket))
    output.line(lease_line(ticket, time.time()))
    output.line(f"release it with: corral release {ticket.id}")


def _run(
    url: str, token: str | None, request: core.TicketArgs, timeout: float | None, argv: list[str]
) -> int:
    """Hold a VM while ``argv`` runs; the command's exit status."""
    run.check_command(argv)
    with client(url, token) as c:
        # a plain stream (corral.cli.plain) is one rich does not take for a terminal either
        if not plain.plain_stream(sys.stderr) and output.errors.is_terminal:
            output.errors.print("waiting for a VM...", markup=False)
        with c.acquire(timeout=timeout, **request) as ticket:
            output.line(f"corral: {common.ticket_line(ticket)}", stderr=True)
            status = run.run_command(argv, run.environment(ticket, os.environ))
        output.line(
            f"corral: command exited with status {status}; ticket {ticket.id} released",
            stderr=True,
        )
    return status


def lease_line(ticket: models.Ticket, now: float) -> str:
    """When the ticket's lease lapses and how to extend it."""
    if ticket.expires_at is None:
        return "no lease: the ticket stays open until released"
    left = max(0.0, ticket.expires_at - now)
    return (
        f"lease: expires at {output.when(ticket.expires_at)} (in {left:.0f} s) unless renewed "
        f"with: corral renew {ticket.id} (a longer lease: corral acquire --ttl SECONDS)"
    )


@contextmanager
def _spinner(wanted: bool, message: str) -> Iterator[None]:
    """A spinner on stderr while the block runs, only when stderr is a terminal."""
    if wanted and output.errors.is_terminal:
        with output.errors.status(message):
            yield
    else:
        yield


@app.command()
@handle_errors
def release(
    ticket: Annotated[str, typer.Argument(help="The ticket id.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Close a ticket: its VM is reused or terminated (a waiting ticket is cancelled)."""
    common.show(url, token, json, lambda c: c.close_ticket(ticket), common.say(common.ticket_line))


@app.command()
@handle_errors
def renew(
    ticket: Annotated[str, typer.Argument(help="The ticket id.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Extend a ticket's lease by its ttl."""
    common.show(
        url,
        token,
        json,
        lambda c: c.renew_ticket(ticket),
        common.say(
            lambda t: f"{common.ticket_line(t)}; lease until {output.when(t.expires_at) or 'never'}"
        ),
    )


DEFAULT_LIMIT = 50
"""How many tickets ``corral tickets`` shows unless told."""

OPEN_STATES = tuple(values(OPEN_TICKET_STATES))
"""The states ``corral tickets`` shows unless told."""


@app.command()
@handle_errors
def tickets(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's tickets.")] = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            help="Only tickets in this state (repeatable or comma-separated; default: the open "
            "ones, waiting and assigned).",
            show_default=False,
        ),
    ] = None,
    all_states: Annotated[
        bool, typer.Option("--all", help="Tickets in every state, closed ones too.")
    ] = False,
    limit: Annotated[
        int, typer.Option(help="Show at most this many, by priority then age (0: no limit).")
    ] = DEFAULT_LIMIT,
    meta: Meta = None,
    json: Json = False,
) -> None:
    """List the open tickets (users see their own), at most --limit of them, saying when the
    list was cut; --all or --state for closed ones, --meta to find tickets by metadata."""
    if all_states and state:
        raise exceptions.InvalidInput("--all and --state: give one or the other")
    if limit < 0:
        raise exceptions.InvalidInput(f"--limit: must be >= 0, not {limit}")
    common.known("--state", common.split_list(state), values(TicketState))
    states = common.split_list(state) or (None if all_states else list(OPEN_STATES))
    pairs = common.pairs("--meta", meta)
    with client(url, token) as c:
        found = c.list_tickets(
            owner=owner, state=states, meta=pairs, limit=None if limit == 0 else limit + 1
        )
    cut = limit != 0 and len(found) > limit
    found = found[:limit] if cut else found
    if json:
        output.print_json(found)
    else:
        common.tickets_table(found)
    if cut:
        output.line(
            f"note: only the first {limit} tickets are shown; more match (--limit N, 0 for all)",
            stderr=True,
        )


# --- pools and VMs -----------------------------------------------------------------------------


def _pools_table(pools: list[models.PoolStatus]) -> None:
    output.table(
        "Pools",
        [
            "pool",
            "backend",
            "tags",
            VMState.READY.value,
            "in use",
            VMState.SPAWNING.value,
            "max",
            TicketState.WAITING.value,
            "spawn p50",
            "health",
        ],
        [
            [
                p.name,
                p.backend,
                ",".join(p.tags),
                p.vms.get(VMState.READY, 0),
                p.vms.get(VMState.IN_USE, 0),
                p.vms.get(VMState.SPAWNING, 0),
                p.max,
                p.waiting_tickets,
                "" if p.stats.spawn_p50 is None else f"{p.stats.spawn_p50:.2f}s",
                "FAILING" if p.problem else "ok",
            ]
            for p in pools
        ],
    )


@app.command()
@handle_errors
def pools(url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False) -> None:
    """List pools with their VMs per state, queue and statistics (admin)."""
    common.show(url, token, json, lambda c: c.list_pools(), _pools_table)


@app.command()
@handle_errors
def vms(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    pool: Annotated[str | None, typer.Option(help="Only this pool's VMs.")] = None,
    state: Annotated[str | None, typer.Option(help="Only VMs in this state.")] = None,
    meta: Annotated[
        list[str] | None,
        typer.Option(
            "--meta",
            help="KEY=VALUE (repeatable): only the VMs held by open tickets carrying it "
            "(find a build's VM by its task id).",
            show_default=False,
        ),
    ] = None,
    json: Json = False,
) -> None:
    """List VMs (admin)."""
    common.known("--state", None if state is None else [state], values(VMState))
    pairs = common.pairs("--meta", meta)
    common.show(
        url,
        token,
        json,
        lambda c: c.list_vms(pool=pool, state=state, ticket_meta=pairs),
        _vms_table,
    )


def _vms_table(found: list[models.VM]) -> None:
    output.table(
        "VMs",
        ["name", "pool", "state", "machine", "address", "ticket", "sandbox", "uses", "since"],
        [
            [
                *(v.name, v.pool, v.state, v.machine_state, v.address),
                ",".join(v.tickets) if len(v.tickets) > 1 else v.ticket,
                v.sandbox,
                v.uses,
                output.when(v.state_since),
            ]
            for v in found
        ],
    )


@vm_app.command("terminate")
@handle_errors
def vm_terminate(
    name: Annotated[
        str | None, typer.Argument(help="The VM's name (or --pool for many).", show_default=False)
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option("--pool", help="Terminate this pool's VMs in bulk.", show_default=False),
    ] = None,
    state: Annotated[
        list[str] | None,
        typer.Option("--state", help="With --pool: only VMs in these states.", show_default=False),
    ] = None,
    unused: Annotated[
        bool, typer.Option("--unused", help="With --pool: only VMs that never served a ticket.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --pool: which VMs, changing nothing.")
    ] = False,
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    if_state: Annotated[
        list[str] | None,
        typer.Option(
            "--if-state",
            help="Only if the VM is in one of these states (comma-separated or repeatable, "
            "e.g. ready,in_use); otherwise exit 6 and nothing changes.",
            show_default=False,
        ),
    ] = None,
    json: Json = False,
) -> None:
    """Terminate a VM, also one still spawning, or a pool's VMs in bulk with --pool (admin)."""
    if (name is None) == (pool is None):
        raise exceptions.InvalidInput("give a VM name or --pool, not both")
    if pool is not None:
        if if_state is not None:
            raise exceptions.InvalidInput("--if-state is for one VM; with --pool use --state")
        many = common.split_list(state) if state is not None else None
        common.show(
            url,
            token,
            json,
            lambda c: c.terminate_pool_vms(pool, states=many, unused=unused, dry_run=dry_run),
            common.say(
                lambda vms: "\n".join(
                    [f"{'would terminate' if dry_run else 'terminating'} {len(vms)} VMs"]
                    + [f"  {v.name} ({v.state})" for v in vms]
                )
            ),
        )
        return
    if state is not None or unused or dry_run or name is None:
        raise exceptions.InvalidInput("--state, --unused and --dry-run go with --pool")
    states = common.split_list(if_state)
    if if_state is not None and not states:
        raise exceptions.InvalidInput("--if-state: give at least one VM state")
    common.show(
        url,
        token,
        json,
        lambda c: c.terminate_vm(name, if_states=states),
        common.say(lambda v: f"VM {v.name} ({v.pool}): {v.state}"),
    )


# --- tasks, locks, status ----------------------------------------------------------------------


def _task_rows(found: list[models.Task]) -> list[list[object]]:
    return [
        [
            t.id,
            t.verb,
            t.state,
            t.tag,
            t.priority,
            f"{t.jobs_done}/{t.jobs_total}" if t.jobs_total is not None else "",
            t.message,
        ]
        for t in found
    ]


TASK_COLUMNS = ["id", "verb", "state", "tag", "priority", "jobs", "message"]


@app.command()
@handle_errors
def tasks(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    state: Annotated[str | None, typer.Option(help="Only tasks in this state.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only tasks with this tag.")] = None,
    json: Json = False,
) -> None:
    """List the engine's tasks (admin)."""
    common.show(
        url,
        token,
        json,
        lambda c: c.list_tasks(state=state, tag=tag),
        lambda found: output.table("Tasks", TASK_COLUMNS, _task_rows(found)),
    )


def _task_details(task: models.Task) -> None:
    output.table("Task", TASK_COLUMNS, _task_rows([task]))
    if task.recoveries:
        output.console.print("recoveries (top last): " + ", ".join(task.recoveries), markup=False)
    if task.result is not None:
        output.console.print(f"result: {task.result}", markup=False)


TaskId = Annotated[str, typer.Argument(help="The task id.")]


@task_app.command("show")
@handle_errors
def task_show(
    task_id: TaskId, url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False
) -> None:
    """Show one task: state, result, jobs done of total, recoveries (admin)."""
    common.show(url, token, json, lambda c: c.get_task(task_id), _task_details)


@task_app.command("stop")
@handle_errors
def task_stop(
    task_id: TaskId,
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    force: Annotated[bool, typer.Option(help="Also abort a task in recovery.")] = False,
    json: Json = False,
) -> None:
    """Stop a task; its recovery policy decides what follows (admin)."""
    common.show(url, token, json, lambda c: c.stop_task(task_id, force=force), _task_details)


@task_app.command("rollback")
@handle_errors
def task_rollback(
    task_id: TaskId, url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False
) -> None:
    """Roll back a done task (admin)."""
    common.show(url, token, json, lambda c: c.rollback_task(task_id), _task_details)


@task_app.command("clean")
@handle_errors
def task_clean(
    task_id: TaskId, url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False
) -> None:
    """Forget a done task (admin)."""
    with client(url, token) as c:
        c.clean_task(task_id)
    if json:
        output.print_json({"id": task_id, "cleaned": True})
    else:
        output.console.print(f"task {task_id} cleaned", markup=False)


@app.command()
@handle_errors
def locks(url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False) -> None:
    """Show every locked or awaited resource: holders (with tokens) and queue (admin)."""
    common.show(url, token, json, lambda c: c.list_locks(), _locks_table)


def _locks_table(found: list[models.LockStatus]) -> None:
    output.table(
        "Locks",
        ["resource", "mode", "holders", "queue"],
        [
            [
                lock.key,
                lock.mode,
                ", ".join(f"{h.owner}#{h.token}" if h.token else h.owner for h in lock.holders),
                ", ".join(f"{w.owner}({w.mode})" for w in lock.queue),
            ]
            for lock in found
        ],
    )


@app.command()
@handle_errors
def status(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    pool: Annotated[
        str | None,
        typer.Option(help="Only this pool, with its human-readable summary and live VMs."),
    ] = None,
    json: Json = False,
) -> None:
    """The server's health, its pools and the ticket queue at a glance (admin).

    Exit code 10 when a pool is failing (most of its recent spawns failed): each one is named
    with the reason of its last failed spawn.
    """
    with client(url, token) as c:
        health = c.health()
        found = c.list_pools() if pool is None else [c.get_pool(pool)]
        text = None if pool is None else c.summary(pool=pool).text
    failing = [p for p in found if p.problem]
    if json:
        output.print_json(
            {
                "health": health.to_json(),
                "pools": [p.to_json() for p in found],
                "failing": {p.name: p.problem for p in failing},
                **({} if text is None else {"summary": text}),
            }
        )
    else:
        waiting = sum(p.waiting_tickets for p in found)
        assigned = sum(p.assigned_tickets for p in found)
        output.console.print(
            f"corral {health.version} at {url}: {health.status}; "
            f"{output.count(len(found), 'pool')}, {output.count(assigned, 'ticket')} assigned, "
            f"{waiting} waiting",
            markup=False,
        )
        if text is not None:
            output.console.print(text, markup=False)
        else:
            _pools_table(found)
        for p in failing:
            output.console.print(f"pool {p.name} is FAILING: {p.problem}", markup=False)
    if failing:
        raise typer.Exit(output.Exit.FAILING)


def version_callback(value: bool) -> None:
    """Print the version and exit."""
    if value:
        output.console.print(entry.version_text(), markup=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=version_callback, is_eager=True, help="Print version."),
    ] = False,
    url: Url = core.DEFAULT_URL,
    token: Token = None,
) -> None:
    """corral keeps pools of VMs ready and hands them out."""


def main() -> None:
    """The console-script entry point."""
    only(app, sys.argv[1:])()


ROOT_VALUE_OPTIONS = ("--url", "--token")
"""The root's options that take a value (``corral --url X tickets``)."""


def only(root: typer.Typer, argv: list[str]) -> typer.Typer:
    """``root`` with only the command or group that ``argv`` names, when it names one.

    Typer builds a click command for every registered command at each start, evaluating every
    parameter's annotation: about a sixth of ``corral tickets``'s instructions (issue 14). A
    copy holding only the invoked command runs it the same way. With no command named
    (``corral``, ``corral --help``) or an unknown one, ``root`` is returned whole, so that help,
    and the error and its suggestions for an unknown command, list every command.
    """
    name = _command_in(argv)
    if name is None:
        return root
    commands = [c for c in root.registered_commands if _command_name(c) == name]
    groups = [g for g in root.registered_groups if _group_name(g) == name]
    if len(commands) + len(groups) != 1:
        return root
    pruned = copy.copy(root)
    pruned.registered_commands = commands
    pruned.registered_groups = groups
    return pruned


def _command_in(argv: list[str]) -> str | None:
    """The first argument that is not a root option or its value."""
    args = iter(argv)
    for arg in args:
        if arg in ROOT_VALUE_OPTIONS:
            next(args, None)
        elif arg == "--" or not arg.startswith("-"):
            return None if arg == "--" else arg
    return None


def _command_name(info: typer.models.CommandInfo) -> str | None:
    if info.name:
        return info.name
    return None if info.callback is None else typer.main.get_command_name(info.callback.__name__)


def _group_name(info: typer.models.TyperInfo) -> str | None:
    inner = info.typer_instance.info.name if info.typer_instance else None
    for name in (info.name, inner):
        if isinstance(name, str) and name:  # unset names are typer's DefaultPlaceholder
            return name
    return None


def one_line_summaries(group: typer.Typer) -> None:
    """Give every command of ``group`` (and of its sub-groups) a one-line summary for the
    command lists of ``--help``: the first paragraph of its docstring, its line breaks joined.

    In rich markup mode Typer keeps a docstring's line breaks in those lists, so a summary
    wrapped at 100 columns in the source was shown as ragged lines cut mid-sentence.
    """
    for info in group.registered_commands:
        text = info.help or (info.callback.__doc__ if info.callback else None)
        if info.short_help is None and text:
            info.short_help = " ".join(text.strip().split("\n\n")[0].split())
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            one_line_summaries(sub.typer_instance)


one_line_summaries(app)
