"""Tables written to a pipe or a file without importing rich, byte for byte as rich writes them.

Importing rich and rendering one table is about a tenth of ``corral tickets``'s instructions
(issue 14). When standard output is not a terminal, rich writes no colours or styles, so a table
is only its text and box-drawing characters; :func:`render` writes that text itself for the
tables it is sure rich would write the same way, and answers ``None`` for every other one (a
terminal, colours forced, a non-UTF-8 stream, a table wider than the pipe's width or narrower
than its title, a cell with anything but printable ASCII, with console markup or with an emoji
code), which the caller then prints with rich. ``tests/cli/test_plain_table.py`` checks it
against rich on generated tables.

This module must import nothing beyond the standard library: it is on the path of every command
that prints a table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TextIO

EMOJI_CODE = re.compile(r":(\S*?)(?:-(?:emoji|text))?:")
"""What rich reads as an emoji code (``:smile:``), as its ``_emoji_replace`` finds them."""

HARMLESS_CODE = re.compile(r"\d{0,2}")
"""Codes rich leaves as they are: no emoji is named by two digits or fewer (checked in the
tests), so ``12:34:56`` prints as written, while ``:100:`` would become an emoji."""

PRINTABLE = re.compile(r"[ -~]*")
"""Printable ASCII: one character is one column, and rich changes none of them."""


def plain_stream(stream: TextIO, environ: os._Environ[str] | dict[str, str] | None = None) -> bool:
    """Whether rich writes no styles to ``stream`` and draws its boxes in UTF-8: not a terminal,
    no ``FORCE_COLOR``/``TTY_COMPATIBLE`` making it one, a UTF-8 encoding."""
    env = os.environ if environ is None else environ
    if env.get("TTY_COMPATIBLE", "") == "1" or env.get("FORCE_COLOR") not in (None, ""):
        return False
    if env.get("JUPYTER_COLUMNS") is not None or env.get("JUPYTER_LINES") is not None:
        return False
    isatty = getattr(stream, "isatty", None)
    if not callable(isatty) or isatty():
        return False
    encoding = (getattr(stream, "encoding", None) or "utf-8").lower()
    return encoding.startswith("utf")


def _literal(text: str) -> bool:
    """Whether rich prints ``text`` in a cell exactly as it is."""
    return "[" not in text and literal_line(text)


def literal_line(text: str) -> bool:
    """Whether rich prints ``text`` with ``markup=False`` exactly as it is: printable ASCII (no
    tab for rich to expand, no control character) with no emoji code rich would replace."""
    if not PRINTABLE.fullmatch(text):
        return False
    return all(HARMLESS_CODE.fullmatch(m.group(1)) for m in EMOJI_CODE.finditer(text))


def render(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], width: int
) -> str | None:
    """The text rich prints for a ``Table(title=title, title_justify="left")`` of these columns
    and rows on a console of ``width`` columns without styles, or ``None`` when not sure."""
    cells = [list(columns), *(list(row) for row in rows)]
    if not columns or any(len(row) != len(columns) for row in cells):
        return None
    if not all(_literal(text) for row in cells for text in row) or not _literal(title):
        return None
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    total = sum(widths) + 3 * len(widths) + 1
    if total > width or len(title) > total:
        return None  # rich would cut the table or wrap the title

    def rule(left: str, line: str, cross: str, right: str) -> str:
        return left + cross.join(line * (w + 2) for w in widths) + right

    def line(edge: str, row: Sequence[str]) -> str:
        return (
            edge
            + edge.join(f" {text.ljust(w)} " for text, w in zip(row, widths, strict=True))
            + edge
        )

    out = [title] if title else []
    out.append(rule("┏", "━", "┳", "┓"))
    out.append(line("┃", columns))
    out.append(rule("┡", "━", "╇", "┩"))
    out.extend(line("│", row) for row in cells[1:])
    out.append(rule("└", "─", "┴", "┘"))
    return "\n".join(out) + "\n"
