"""The guard's cheaper checks (issue 14): the control-character check (issue 8 item 11) is one
regular expression that refuses exactly the characters below U+0020 and DEL; a request whose head
declares no body is read without the body's deadline, and only such a request."""

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


def test_a_head_declares_no_body_only_without_length_or_transfer_encoding() -> None:
    """Fails when a request that may carry a body is read without the body's deadline: a
    ``Transfer-Encoding``, or any ``Content-Length`` other than 0 (also a second one)."""
    assert guard.declares_no_body([])
    assert guard.declares_no_body([(b"host", b"x"), (b"content-length", b"0")])
    assert not guard.declares_no_body([(b"content-length", b"10")])
    assert not guard.declares_no_body([(b"Content-Length", b"1")])
    assert not guard.declares_no_body([(b"content-length", b"0"), (b"content-length", b"5")])
    assert not guard.declares_no_body([(b"transfer-encoding", b"chunked")])
    assert not guard.declares_no_body([(b"Transfer-Encoding", b"chunked")])
