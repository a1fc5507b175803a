"""The guard's control-character check (issue 8 item 11), done with one regular expression since
issue 14: it refuses exactly the characters below U+0020 and DEL."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from corral.api import guard


@given(st.text(alphabet=st.characters(max_codepoint=0x2FF)))
def test_control_characters_are_those_below_space_and_del(text: str) -> None:
    """Fails when the check misses a control character (e.g. DEL) or refuses another one."""
    expected = any(ord(c) < 0x20 or ord(c) == 0x7F for c in text)
    assert guard._has_control(text) is expected
    assert guard._has_control(f"x{text}\x7fy") is True
