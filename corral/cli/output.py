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

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from corral import exceptions

PIPE_WIDTH = 200
"""Width of tables written to a pipe or file: wide enough that nothing gets truncated."""


def _width(stream: object) -> int | None:
    isatty = getattr(stream, "isatty", None)
    return None if callable(isatty) and isatty() else PIPE_WIDTH


console = Console(highlight=False, soft_wrap=True, width=_width(sys.stdout))
"""Standard output (tables, results)."""

errors = Console(stderr=True, highlight=False, soft_wrap=True, width=_width(sys.stderr))
"""Standard error (problems, notices)."""


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


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, object]) -> None:
    """Write ``value`` as JSON to standard output (one document)."""
    if isinstance(value, BaseModel):
        data: object = value.model_dump(mode="json")
    elif isinstance(value, dict):
        data = value
    else:
        data = [v.model_dump(mode="json") for v in value]
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


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Print a rich table (or a one-line note when there are no rows)."""
    if not rows:
        console.print(f"[dim]no {title.lower()}[/dim]")
        return
    out = Table(title=title, title_justify="left")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(text(cell) for cell in row))
    console.print(out)
