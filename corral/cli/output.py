"""How the ``corral`` command shows results: rich tables for people, JSON with ``--json``.

Also the exit codes, one per kind of failure, so scripts can tell them apart. This module must not
talk to the server.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from enum import IntEnum
from typing import TYPE_CHECKING

from corral import exceptions
from corral.cli import plain
from corral.client.record import Record

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 200
"""Width of tables written to a pipe or file: wide enough that nothing gets truncated."""


def _width(stream: object) -> int | None:
    isatty = getattr(stream, "isatty", None)
    return None if callable(isatty) and isatty() else PIPE_WIDTH


# rich is imported when one of these is first used, not with this module: a command whose
# output is a table written to a pipe needs none of it (see table() and corral.cli.plain).
console: Console
"""Standard output (tables, results)."""

errors: Console
"""Standard error (problems, notices)."""


def __getattr__(name: str) -> object:
    """``console`` and ``errors``, made when first used (PEP 562)."""
    if name not in ("console", "errors"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from rich.console import Console

    stream = sys.stderr if name == "errors" else sys.stdout
    made = Console(stderr=name == "errors", highlight=False, soft_wrap=True, width=_width(stream))
    globals()[name] = made
    return made


class Exit(IntEnum):
    """The exit codes of ``corral`` (documented in docs/cli.md)."""

    OK = 0
    ERROR = 1
    """Any other failure (server error, unexpected answer)."""
    USAGE = 2
    """Bad command-line usage (unknown option, missing argument)."""
    INVALID = 3
    """Invalid input or configuration (``invalid_input``, ``config_error``, ...)."""
    AUTH = 4
    """No valid token, or the token's role does not allow it."""
    NOT_FOUND = 5
    """No such ticket, pool, VM or task."""
    CONFLICT = 6
    """The object's state does not allow it (e.g. the ticket is already closed)."""
    TIMEOUT = 7
    """``acquire`` got no VM within ``--timeout``."""
    UNREACHABLE = 8
    """The server cannot be reached."""
    UNAVAILABLE = 9
    """What ``serve`` or ``db`` needs is unavailable: the port is taken, the store cannot be
    opened or is in use by another ``corral serve``."""
    FAILING = 10
    """``status``: a pool is failing (most of its recent spawns failed)."""


def exit_code(error: exceptions.CorralError) -> Exit:
    """The exit code for ``error``."""
    table: list[tuple[type[exceptions.CorralError], Exit]] = [
        (exceptions.ServerUnreachable, Exit.UNREACHABLE),
        (exceptions.AddressInUse, Exit.UNAVAILABLE),
        (exceptions.StoreError, Exit.UNAVAILABLE),
        (exceptions.TicketTimeout, Exit.TIMEOUT),
        (exceptions.InvalidInput, Exit.INVALID),
        (exceptions.Unauthorized, Exit.AUTH),
        (exceptions.Forbidden, Exit.AUTH),
        (exceptions.NotFound, Exit.NOT_FOUND),
        (exceptions.Conflict, Exit.CONFLICT),
        (exceptions.TaskError, Exit.CONFLICT),
        (exceptions.LockError, Exit.CONFLICT),
    ]
    for cls, code in table:
        if isinstance(error, cls):
            return code
    return Exit.ERROR


def print_json(value: Record | Sequence[Record] | dict[str, object]) -> None:
    """Write ``value`` (the client's records, or plain data) as JSON to standard output (one
    document)."""
    if isinstance(value, Record):
        data: object = value.to_json()
    elif isinstance(value, dict):
        data = value
    else:
        data = [v.to_json() for v in value]
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def when(timestamp: float | None) -> str:
    """A wall-clock timestamp as local ``HH:MM:SS`` (empty when unknown)."""
    if timestamp is None:
        return ""
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def count(n: int, noun: str) -> str:
    """``1 pool``, ``2 pools``."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def text(value: object) -> str:
    """A cell: empty for ``None``."""
    return "" if value is None else str(value)


def line(text: str, *, stderr: bool = False) -> None:
    """Print ``text`` and a newline as ``console.print(text, markup=False)`` does (``errors``
    with ``stderr``).

    On a pipe or a file, text that rich would print unchanged
    (:func:`corral.cli.plain.literal_line`) is written directly, which spares the command
    importing rich (about a tenth of ``corral tickets``'s instructions when it adds its "only the
    first 50" note, issue 14). Once rich's console for that stream exists, it prints everything,
    so the two never interleave.
    """
    name, stream = ("errors", sys.stderr) if stderr else ("console", sys.stdout)
    if name not in globals() and plain.plain_stream(stream) and plain.literal_line(text):
        stream.write(text + "\n")
        stream.flush()
        return
    made: Console = getattr(sys.modules[__name__], name)  # made on first use
    made.print(text, markup=False)


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a rich table (or a one-line note when there are no rows).

    On a pipe or a file the table is written by :mod:`corral.cli.plain` when it can write what
    rich would, which spares the command importing rich.
    """
    cells = [[text(cell) for cell in row] for row in rows]
    if "console" not in globals() and plain.plain_stream(sys.stdout):
        written = f"no {title.lower()}\n" if not rows else None
        written = written or plain.render(title, columns, cells, PIPE_WIDTH)
        if written is not None:
            sys.stdout.write(written)
            sys.stdout.flush()  # as rich does: a note on stderr after it stays after it
            return
    stdout = sys.modules[__name__].console  # made on first use (a bare name would not be)
    if not rows:
        stdout.print(f"[dim]no {title.lower()}[/dim]")
        return
    from rich.table import Table

    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in cells:
        out.add_row(*row)
    stdout.print(out)
