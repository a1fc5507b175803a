"""Tables written without rich (corral.cli.plain) are what rich writes, byte for byte (issue 14)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.table import Table

from corral.cli import output, plain

WIDTH = output.PIPE_WIDTH


def rich_text(title: str, columns: list[str], rows: list[list[str]], width: int = WIDTH) -> str:
    """What ``output.table`` printed with rich alone (before issue 14), on a pipe."""
    file = io.StringIO()
    console = Console(file=file, highlight=False, soft_wrap=True, width=width)
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    return file.getvalue()


TICKETS = (
    "Tickets",
    ["id", "owner", "state", "pool", "tags", "sandbox", "prio", "vm", "address", "created", "meta"],
    [
        [
            *("a48b4ce67dfb496892a0e5144ef9ab0f", "anonymous", "assigned", "demo", "", ""),
            *("0", "demo-000001", "10.0.0.1", "10:26:02", "job=1,branch=main"),
        ],
        [
            *("b48b4ce67dfb496892a0e5144ef9ab0f", "alice", "waiting", "", "x86,fast", "sb"),
            *("-5", "", "", "23:59:59", ""),
        ],
    ],
)


def test_a_tickets_table_is_written_without_rich_as_rich_writes_it() -> None:
    """Fails when the plain renderer draws a table differently from rich (a border, the
    padding, the title line) or gives up on an ordinary tickets table."""
    title, columns, rows = TICKETS
    written = plain.render(title, columns, rows, WIDTH)
    assert written is not None
    assert written == rich_text(title, columns, rows)


SAFE = st.sampled_from(list("ab Z09:-_=.,/@#"))
RISKY = st.sampled_from([*"[]\\é\t漢", ":100:", ":smile:", ":12:", "  "])
CELL = st.lists(st.one_of(SAFE, SAFE, SAFE, SAFE, SAFE, SAFE, RISKY), max_size=8).map("".join)
"""Mostly what the renderer accepts, sometimes what it must leave to rich."""


@settings(max_examples=300, deadline=None)
@given(
    title=CELL,
    columns=st.lists(CELL, min_size=1, max_size=6),
    data=st.data(),
    width=st.sampled_from([20, 60, WIDTH]),
)
@example(title="Tickets", columns=["a"], data=None, width=WIDTH)  # narrower than its title
@example(title="T", columns=["a" * 120, "b" * 80], data=None, width=WIDTH)  # wider than a pipe
def test_whatever_it_writes_rich_would_write(
    title: str, columns: list[str], data: st.DataObject | None, width: int
) -> None:
    """Fails when a table the renderer accepts comes out differently from rich's: markup
    (``[b]``), an emoji code (``:smile:``, ``:100:``), tabs, wide or non-ASCII characters,
    surrounding spaces, a title wider than the table, a table wider than the console."""
    rows = (
        [["x"] * len(columns)]
        if data is None
        else data.draw(
            st.lists(st.lists(CELL, min_size=len(columns), max_size=len(columns)), max_size=4)
        )
    )
    written = plain.render(title, columns, rows, width)
    if written is not None:
        assert written == rich_text(title, columns, rows, width)


def test_no_emoji_is_named_by_two_digits_or_fewer() -> None:
    """The renderer prints ``12:34:56`` as it is because rich's ``:34:`` names no emoji; fails
    when a rich version adds one (the renderer would then print the code rich replaces)."""
    from rich._emoji_codes import EMOJI

    assert not [name for name in EMOJI if plain.HARMLESS_CODE.fullmatch(name)]


@pytest.mark.parametrize(
    ("environ", "plain_ok"),
    [
        ({}, True),
        ({"FORCE_COLOR": "1"}, False),
        ({"FORCE_COLOR": ""}, True),
        ({"TTY_COMPATIBLE": "1"}, False),
        ({"TTY_COMPATIBLE": "0"}, True),
        ({"JUPYTER_COLUMNS": "80"}, False),
    ],
)
def test_plain_only_where_rich_writes_no_styles(environ: dict[str, str], plain_ok: bool) -> None:
    """Fails when the renderer is used where rich would style the table (colours forced) or
    refused where rich would not."""
    assert plain.plain_stream(io.StringIO(), environ) is plain_ok


class _Stream(io.StringIO):
    def __init__(self, *, tty: bool = False, encoding: str = "utf-8") -> None:
        super().__init__()
        self._tty, self._encoding = tty, encoding

    def isatty(self) -> bool:
        return self._tty

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._encoding


def test_plain_not_on_a_terminal_nor_an_ascii_stream() -> None:
    """Fails when the renderer writes to a terminal (rich styles the header there) or to a
    non-UTF-8 stream (rich draws ASCII boxes there)."""
    assert plain.plain_stream(_Stream(), {})
    assert not plain.plain_stream(_Stream(tty=True), {})
    assert not plain.plain_stream(_Stream(encoding="ascii"), {})


def test_a_table_on_a_pipe_does_not_import_rich() -> None:
    """Fails when ``output.table`` (or importing ``corral.cli.output``) loads rich again for a
    table written to a pipe, and when what it writes differs from rich's table."""
    title, columns, rows = TICKETS
    probe = (
        "import sys\nfrom corral.cli import output\n"
        f"output.table({title!r}, {columns!r}, {rows!r})\n"
        "output.table('Pools', ['pool'], [])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'), file=sys.stderr)"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    assert done.stderr.strip() == "[]"
    assert done.stdout == rich_text(title, columns, rows) + "no pools\n"
