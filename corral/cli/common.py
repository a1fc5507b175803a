"""What every client command of ``corral`` shares: its options, its error handling, its client.

``--url``/``CORRAL_URL`` and ``--token``/``CORRAL_TOKEN`` are accepted after the command or
before it; a :class:`CorralError` becomes one ``error: code: message`` line and its exit code.
This module must not contain controller or API logic.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Annotated, ParamSpec, TypeVar, cast

import pydantic
import typer

from corral import config_messages, exceptions
from corral.cli import output
from corral.client import Client, models
from corral.client.record import Record
from corral.pools.lifecycle import TicketState

P = ParamSpec("P")
R = TypeVar("R")


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
            output.line(f"error: {exc.code}: {exc.message}", stderr=True)
            raise typer.Exit(output.exit_code(exc)) from None

    return wrapper


@contextmanager
def client(url: str, token: str | None) -> Iterator[Client]:
    """A client of ``url``, closed afterwards.

    The client sends to a plain ``http://`` URL with no proxy configured through the standard
    library (:mod:`corral.client.plainhttp`), which spares every command the import of httpx
    (issue 14); any other URL goes through httpx.
    """
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


Shown = TypeVar("Shown", bound=Record | Sequence[Record])


def show(
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


def say(line: Callable[[Shown], str]) -> Callable[[Shown], None]:
    """A renderer printing one line about the answer."""
    return lambda answer: output.line(line(answer))


def meta_text(meta: dict[str, str]) -> str:
    """A ticket's metadata as ``k=v, k=v`` (sorted; empty without any)."""
    return ", ".join(f"{k}={v}" for k, v in sorted(meta.items()))


def tickets_table(tickets: list[models.Ticket]) -> None:
    """Print tickets as a table (metadata included)."""
    output.table(
        "Tickets",
        [
            *("id", "owner", "state", "pool", "tags", "sandbox", "prio", "vm", "address"),
            *("created", "meta"),
        ],
        [
            [
                t.id,
                t.owner,
                t.state,
                t.pool or ",".join(dict.fromkeys(e.pool for e in t.requests if e.pool)),
                ",".join(t.tags or dict.fromkeys(g for e in t.requests for g in e.tags)),
                t.sandbox,
                t.priority,
                ",".join(t.vms) if len(t.vms) > 1 else t.vm,
                ",".join(a or "-" for _, a in with_addresses(t)) if len(t.vms) > 1 else t.address,
                output.when(t.created_at),
                meta_text(t.meta),
            ]
            for t in tickets
        ],
    )


def ticket_line(ticket: models.Ticket) -> str:
    """One line about a ticket: id, owner, state, its VM, why it ended, its metadata."""
    line = f"ticket {ticket.id} ({ticket.owner}): {ticket.state}"
    if ticket.state == TicketState.ASSIGNED and len(ticket.vms) > 1:
        line += " VMs " + ", ".join(_at(name, a) for name, a in with_addresses(ticket))
    elif ticket.state == TicketState.ASSIGNED and ticket.vm:
        line += f" VM {_at(ticket.vm, ticket.address)}"
    elif len(ticket.vms) > 1:
        line += f", VMs {', '.join(ticket.vms)} given back"
    elif ticket.vm:
        line += f", VM {ticket.vm} given back"
    elif ticket.count > 1:
        line += f" ({ticket.count} VMs together)"
    if ticket.reason and ticket.state != TicketState.ASSIGNED:
        line += f" ({ticket.reason})"
    if ticket.meta:
        line += f" [{meta_text(ticket.meta)}]"
    return line


def _at(name: str, address: str | None) -> str:
    return name + (f" at {address}" if address else "")


def with_addresses(ticket: models.Ticket) -> list[tuple[str, str | None]]:
    """Each VM of the ticket with its address (``None`` when the server gave none: not up, or
    a server older than multi-machine tickets)."""
    given = ticket.addresses
    return [(name, given[i] if i < len(given) else None) for i, name in enumerate(ticket.vms)]


def pairs(option: str, values: Sequence[str] | None) -> dict[str, str] | None:
    """``KEY=VALUE`` options as a mapping (``None`` when none were given); ``InvalidInput``
    naming ``option`` and the malformed value, before anything is sent."""
    if not values:
        return None
    found: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep or not key.strip():
            raise exceptions.InvalidInput(f"{option}: {value!r} is not KEY=VALUE")
        if key in found and found[key] != rest:
            raise exceptions.InvalidInput(f"{option}: {key!r} given twice with different values")
        found[key] = rest
    return found


def known(option: str, given: Sequence[str] | None, allowed: Sequence[str]) -> None:
    """Refuse values of ``option`` outside ``allowed`` (states), naming the option and the
    values it takes, before anything is sent (the server's answer names its query field)."""
    unknown = [value for value in given or () if value not in allowed]
    if unknown:
        raise exceptions.InvalidInput(
            f"{option}: unknown {', '.join(map(repr, unknown))} (known: {', '.join(allowed)})"
        )


def split_list(values: Sequence[str] | None) -> list[str] | None:
    """Repeatable, comma-separated option values as one list (``None`` when not given; empty
    items dropped)."""
    if values is None:
        return None
    return [item.strip() for value in values for item in value.split(",") if item.strip()]
