"""The guard's cheaper checks (issue 14): the control-character check (issue 8 item 11) is one
regular expression that refuses exactly the characters below U+0020 and DEL; a request whose head
declares no body is read without the body's deadline, and only such a request."""

from __future__ import annotations

import asyncio
from typing import Any

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


class _NoAuth:
    def authenticate(self, header: str | None) -> None:
        return None


async def _through_guard(body: bytes, *, max_body: int = 16) -> tuple[list[int], bytes | None]:
    """One request whose head declares no body, but whose server hands the app ``body`` in one
    complete message; what the client got (statuses) and what the app read."""
    got: list[bytes] = []
    statuses: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        got.append(message.get("body", b""))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # nothing more will come: a wait here is the bug
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/healthz",
        "query_string": b"",
        "headers": [(b"host", b"x")],
    }
    g = guard.Guard(app, auth=_NoAuth(), max_body=max_body, body_timeout=60)  # type: ignore[arg-type]
    await asyncio.wait_for(g(scope, receive, send), 5)
    return statuses, (got[0] if got else None)


async def test_a_body_sent_after_all_is_read_whole_and_bounded() -> None:
    """A head that declares no body but a server that hands over a complete one anyway: the app
    gets it at once (no wait for a message that never comes, which ended in a 408), and its size
    is held to the limit. Breakage caught: the first complete chunk treated as a partial one."""
    assert await _through_guard(b"abc") == ([200], b"abc")
    assert await _through_guard(b"") == ([200], b"")
    statuses, read = await _through_guard(b"x" * 17)
    assert statuses == [413] and read is None
