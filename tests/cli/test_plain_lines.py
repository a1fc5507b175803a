"""One-line messages written without rich (``output.line``) are what rich writes (issue 14)."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.console import Console

from corral.cli import output, plain


def rich_line(text: str) -> str:
    """What ``console.print(text, markup=False)`` printed on a pipe (the console as output
    makes it)."""
    file = io.StringIO()
    Console(file=file, highlight=False, soft_wrap=True, width=output.PIPE_WIDTH).print(
        text, markup=False
    )
    return file.getvalue()


PIECES = st.sampled_from(
    [*"ab Z09:-_=.,/@#[]()'\"", ":100:", ":smile:", ":12:", "  ", "\t", "é", "漢", "\x1b", "\r"]
)


@given(st.lists(PIECES, max_size=40).map("".join), st.integers(0, 250))
@example(":smile: note", 0)
@example("error: not_found: no ticket [abc]", 0)
@example("x", 220)
def test_a_line_rich_prints_unchanged_is_recognised(text: str, pad: int) -> None:
    """Fails when :func:`plain.literal_line` accepts a line rich would change (an emoji code
    replaced, a tab expanded, a control character dropped, a long line wrapped)."""
    text = text + "." * pad
    if plain.literal_line(text):
        assert rich_line(text) == text + "\n"


@pytest.fixture
def no_consoles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``output`` without its rich consoles, as in a fresh ``corral`` process; the ones a test
    makes are dropped after it (they would write to that test's captured streams)."""
    saved = {n: vars(output).pop(n) for n in ("console", "errors") if n in vars(output)}
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    yield
    for name in ("console", "errors"):
        vars(output).pop(name, None)
    vars(output).update(saved)


@pytest.mark.parametrize("stderr", [False, True])
@pytest.mark.usefixtures("no_consoles")
def test_line_writes_plain_text_without_rich(
    stderr: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Fails when ``output.line`` makes a rich console for a literal line on a pipe (or writes
    it to the wrong stream)."""
    output.line("note: only the first 50 tickets are shown [x]", stderr=stderr)
    out, err = capsys.readouterr()
    assert (err if stderr else out) == "note: only the first 50 tickets are shown [x]\n"
    assert (out if stderr else err) == ""
    assert "console" not in vars(output) and "errors" not in vars(output)


@pytest.mark.usefixtures("no_consoles")
def test_line_gives_what_rich_would_change_to_rich(capsys: pytest.CaptureFixture[str]) -> None:
    """Fails when a line with an emoji code bypasses rich (it would print ``:smile:`` where
    the rich console prints the emoji)."""
    output.line("hello :smile:")
    assert "console" in vars(output)
    assert ":smile:" not in capsys.readouterr().out
