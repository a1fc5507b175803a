"""The ``corral`` command: serve, acquire, release and inspect, over the HTTP API.

Every client command takes ``--url``/``CORRAL_URL`` and ``--token``/``CORRAL_TOKEN`` (after the
command, or before it: ``corral --url X tickets``) and prints a rich table for people or JSON with
``--json``; every failure is one line ``error: <code>: <message>`` on standard error and an exit
code per kind of failure (:class:`corral.cli.output.Exit`) — never a traceback.

This module must not contain controller or API logic: it parses arguments, calls the client (or,
for ``serve``/``config``/``db``, the server-side entry points) and prints.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, ParamSpec, TypeVar, cast

import pydantic
import typer
from pydantic import BaseModel

from corral import __version__, config_messages, exceptions
from corral.cli import admin, output
from corral.client import Client, core, flows, models

P = ParamSpec("P")
R = TypeVar("R")

HELP = (
    "corral keeps pools of VMs ready and hands them out.\n\n"
    "Start a server with 'corral serve' (no --config: a demo pool on the fake backend), then "
    "take a VM with 'corral acquire --pool demo' and give it back with 'corral release TICKET'. "
    "Every command has --help; every command but 'serve' prints JSON with --json."
)

EPILOG = (
    "Exit codes: 0 ok; 1 other failure; 2 bad usage; 3 invalid input or configuration; "
    "4 no valid token or not allowed; 5 not found; 6 state does not allow it; "
    "7 acquire timed out; 8 server unreachable; 9 port or database unavailable. "
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
app.add_typer(vm_app, name="vm")
app.add_typer(task_app, name="task")
app.add_typer(admin.config_app, name="config")
app.add_typer(admin.db_app, name="db")
app.command("serve")(admin.serve)


def _given_before(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """The option's value: given after the command, else before it (``corral --url X tickets``),
    else from the environment or the default."""
    name = param.name or ""
    root = cast(typer.Context, ctx.find_root())  # typer's Context is click's, with extras
    if root is ctx or _on_command_line(ctx, name) or not _on_command_line(root, name):
        return value
    given: str | None = root.params.get(name)
    return given


def _on_command_line(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


Url = Annotated[
    str,
    typer.Option(
        "--url",
        envvar="CORRAL_URL",
        show_envvar=True,
        callback=_given_before,
        help="The corral server (also accepted before the command).",
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="CORRAL_TOKEN",
        show_envvar=True,
        show_default=False,
        callback=_given_before,
        help="Bearer token (from the server's api.tokens; also accepted before the command).",
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


OPTION_NAMES = {"tags": "--tag"}
"""Request fields whose command-line option is not ``--<field>``."""


def invalid_options(error: pydantic.ValidationError) -> exceptions.InvalidInput:
    """A request the client refused before sending, worded with the options' names."""
    problems = []
    for line in config_messages.describe_errors(error):
        field, _, problem = line.partition(": ")
        name = field.split(".")[0]
        problems.append(f"{OPTION_NAMES.get(name, '--' + name.replace('_', '-'))}: {problem}")
    return exceptions.InvalidInput("; ".join(problems))


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a CorralError (or a request the client refused) into one ``error: code: message``
    line on stderr and its exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return func(*args, **kwargs)
            except pydantic.ValidationError as exc:
                raise invalid_options(exc) from exc
        except exceptions.CorralError as exc:
            output.errors.print(f"error: {exc.code}: {exc.message}", markup=False)
            raise typer.Exit(output.exit_code(exc)) from None

    return wrapper


@contextmanager
def client(url: str, token: str | None) -> Iterator[Client]:
    """A client of ``url``, closed afterwards."""
    with Client(url, token=token) as c:
        yield c


def seconds(option: str, value: float | None, *, at_least: float | None = 0.0) -> float | None:
    """``value`` if it is a finite number of seconds (>= ``at_least``); else ``InvalidInput``
    naming ``option`` (the command line parses ``nan`` and ``inf`` as numbers)."""
    if value is None:
        return None
    if not math.isfinite(value):
        raise exceptions.InvalidInput(f"{option}: must be a finite number of seconds, not {value}")
    if at_least is not None and value < at_least:
        raise exceptions.InvalidInput(f"{option}: must be >= {at_least:g}, not {value:g}")
    return value


Shown = TypeVar("Shown", bound=BaseModel | Sequence[BaseModel])


def _show(
    url: str,
    token: str | None,
    json: bool,
    fetch: Callable[[Client], Shown],
    render: Callable[[Shown], None],
) -> None:
    """Call the server with a client of ``url``; print the answer as JSON or ``render`` it."""
    with client(url, token) as c:
        answer = fetch(c)
    if json:
        output.print_json(answer)
    else:
        render(answer)


def _say(line: Callable[[Shown], str]) -> Callable[[Shown], None]:
    """A renderer printing one line about the answer."""
    return lambda answer: output.console.print(line(answer), markup=False)


def _tickets_table(tickets: list[models.Ticket]) -> None:
    output.table(
        "Tickets",
        ["id", "owner", "state", "pool", "tags", "sandbox", "prio", "vm", "address", "created"],
        [
            [
                t.id,
                t.owner,
                t.state,
                t.pool,
                ",".join(t.tags),
                t.sandbox,
                t.priority,
                t.vm,
                t.address,
                output.when(t.created_at),
            ]
            for t in tickets
        ],
    )


def _ticket_line(ticket: models.Ticket) -> str:
    line = f"ticket {ticket.id} ({ticket.owner}): {ticket.state}"
    if ticket.state == "assigned" and ticket.vm:
        line += f" VM {ticket.vm}" + (f" at {ticket.address}" if ticket.address else "")
    elif ticket.vm:
        line += f", VM {ticket.vm} given back"
    if ticket.reason and ticket.state != "assigned":
        line += f" ({ticket.reason})"
    return line


# --- tickets -----------------------------------------------------------------------------------


@app.command()
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
    json: Json = False,
) -> None:
    """Wait for a VM and print the ticket id, VM name, address and lease.

    The ticket stays open after the command exits, for its lease: the pool's ticket_ttl (900 s
    unless configured), or --ttl. Renew it with 'corral renew TICKET' before it lapses, and
    give the VM back with 'corral release TICKET'. While it waits, its long-polls keep the
    lease alive.
    """
    if pool is None and not tag:
        raise exceptions.InvalidInput("give --pool or at least one --tag")
    seconds("--timeout", timeout)
    seconds("--ttl", ttl, at_least=None)  # the request model checks its range
    acquisition = flows.Acquisition(
        pool=pool,
        tags=tag or (),
        owner=owner,
        sandbox=sandbox,
        priority=priority,
        ttl=ttl,
        timeout=timeout,
    )
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
    output.console.print(_ticket_line(ticket), markup=False)
    output.console.print(lease_line(ticket, time.time()), markup=False)
    output.console.print(f"release it with: corral release {ticket.id}", markup=False)


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
    _show(url, token, json, lambda c: c.close_ticket(ticket), _say(_ticket_line))


@app.command()
@handle_errors
def renew(
    ticket: Annotated[str, typer.Argument(help="The ticket id.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Extend a ticket's lease by its ttl."""
    _show(
        url,
        token,
        json,
        lambda c: c.renew_ticket(ticket),
        _say(lambda t: f"{_ticket_line(t)}; lease until {output.when(t.expires_at) or 'never'}"),
    )


@app.command()
@handle_errors
def tickets(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    owner: Annotated[str | None, typer.Option(help="Only this owner's tickets.")] = None,
    state: Annotated[str | None, typer.Option(help="Only tickets in this state.")] = None,
    json: Json = False,
) -> None:
    """List tickets (users see their own)."""
    _show(url, token, json, lambda c: c.list_tickets(owner=owner, state=state), _tickets_table)


# --- pools and VMs -----------------------------------------------------------------------------


def _pools_table(pools: list[models.PoolStatus]) -> None:
    output.table(
        "Pools",
        ["pool", "backend", "tags", "ready", "in use", "spawning", "max", "waiting", "spawn p50"],
        [
            [
                p.name,
                p.backend,
                ",".join(p.tags),
                p.vms.get("ready", 0),
                p.vms.get("in_use", 0),
                p.vms.get("spawning", 0),
                p.max,
                p.waiting_tickets,
                "" if p.stats.spawn_p50 is None else f"{p.stats.spawn_p50:.2f}s",
            ]
            for p in pools
        ],
    )


@app.command()
@handle_errors
def pools(url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False) -> None:
    """List pools with their VMs per state, queue and statistics (admin)."""
    _show(url, token, json, lambda c: c.list_pools(), _pools_table)


@app.command()
@handle_errors
def vms(
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    pool: Annotated[str | None, typer.Option(help="Only this pool's VMs.")] = None,
    state: Annotated[str | None, typer.Option(help="Only VMs in this state.")] = None,
    json: Json = False,
) -> None:
    """List VMs (admin)."""
    _show(url, token, json, lambda c: c.list_vms(pool=pool, state=state), _vms_table)


def _vms_table(found: list[models.VM]) -> None:
    output.table(
        "VMs",
        ["name", "pool", "state", "address", "ticket", "sandbox", "uses", "since"],
        [
            [
                *(v.name, v.pool, v.state, v.address, v.ticket, v.sandbox, v.uses),
                output.when(v.state_since),
            ]
            for v in found
        ],
    )


@vm_app.command("terminate")
@handle_errors
def vm_terminate(
    name: Annotated[str, typer.Argument(help="The VM's name.")],
    url: Url = core.DEFAULT_URL,
    token: Token = None,
    json: Json = False,
) -> None:
    """Terminate a VM, also one still spawning (admin)."""
    _show(
        url,
        token,
        json,
        lambda c: c.terminate_vm(name),
        _say(lambda v: f"VM {v.name} ({v.pool}): {v.state}"),
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
    _show(
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
    _show(url, token, json, lambda c: c.get_task(task_id), _task_details)


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
    _show(url, token, json, lambda c: c.stop_task(task_id, force=force), _task_details)


@task_app.command("rollback")
@handle_errors
def task_rollback(
    task_id: TaskId, url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False
) -> None:
    """Roll back a done task (admin)."""
    _show(url, token, json, lambda c: c.rollback_task(task_id), _task_details)


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
    _show(url, token, json, lambda c: c.list_locks(), _locks_table)


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
def status(url: Url = core.DEFAULT_URL, token: Token = None, json: Json = False) -> None:
    """The server's health, its pools and the ticket queue at a glance."""
    with client(url, token) as c:
        health = c.health()
        found = c.list_pools()
    if json:
        output.print_json(
            {
                "health": health.model_dump(mode="json"),
                "pools": [p.model_dump(mode="json") for p in found],
            }
        )
        return
    waiting = sum(p.waiting_tickets for p in found)
    assigned = sum(p.assigned_tickets for p in found)
    output.console.print(
        f"corral {health.version} at {url}: {health.status}; "
        f"{output.count(len(found), 'pool')}, {output.count(assigned, 'ticket')} assigned, "
        f"{waiting} waiting",
        markup=False,
    )
    _pools_table(found)


def version_callback(value: bool) -> None:
    """Print the version and exit."""
    if value:
        output.console.print(f"corral {__version__}", markup=False)
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
    app()
