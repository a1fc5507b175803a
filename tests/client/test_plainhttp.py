"""The standard library transport of the ``corral`` command (``corral.client.plainhttp``, issue
14): it must send what httpx sends and fail as httpx fails, so that a command's output and
errors do not depend on which of the two carried it.

Each test names the breakage it catches.
"""

from __future__ import annotations

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.client import Client, plainhttp


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"limit": 5, "all": True, "closed": False, "none": None, "ratio": 1.5},
        {"state": ["open", "assigned"], "owner": "a b=c&d/é+%", "meta": ["k=v", "x y"]},
    ],
)
def test_the_query_is_httpx_s(params: dict[str, object]) -> None:
    """Breakage caught: a query written differently from httpx's (``True`` for ``true``, a list
    sent as its ``repr`` instead of repeated keys, a value not percent-encoded)."""
    assert plainhttp.query(params) == str(httpx.QueryParams(params))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "environ", "usable"),
    [
        ("http://127.0.0.1:8642", {}, True),
        ("HTTP://corral.example/prefix", {"NO_PROXY": "*"}, True),
        ("https://corral.example", {}, False),
        ("http://127.0.0.1:8642", {"HTTP_PROXY": "http://proxy:3128"}, False),
        ("http://127.0.0.1:8642", {"all_proxy": "socks5://proxy"}, False),
        ("http://", {}, False),
        ("http://user:secret@127.0.0.1:8642", {}, False),
    ],
)
def test_only_plain_http_without_a_proxy_is_sent_without_httpx(
    url: str, environ: dict[str, str], usable: bool
) -> None:
    """Breakage caught: a TLS URL sent in clear, a proxy set in the environment bypassed or
    credentials in the URL dropped (httpx would have used them)."""
    assert plainhttp.usable(url, environ) is usable


def test_a_client_on_plainhttp_answers_as_on_httpx(server: BackgroundServer) -> None:
    """Breakage caught: the JSON body, the token's header or the query lost or changed on the
    way (the ticket is not created, is another owner's, or the filtered list differs), or the
    answer read differently from httpx's."""
    plain = Client(server.url, token=ALICE_TOKEN, http=plainhttp.PlainHTTP(server.url))
    with plain, Client(server.url, token=ADMIN_TOKEN) as reference:
        ticket = plain.create_ticket(pool="small", meta={"job": "a b/é"})
        try:
            assert ticket.owner == reference.get_ticket(ticket.id).owner == "alice"
            found = plain.list_tickets(state=["waiting", "assigned"], meta={"job": "a b/é"})
            assert [t.id for t in found] == [ticket.id]
            assert found == reference.list_tickets(
                state=["waiting", "assigned"], meta={"job": "a b/é"}
            )
            with pytest.raises(exceptions.NotFound):
                plain.get_ticket("no-such-ticket")
        finally:
            plain.close_ticket(ticket.id)


def test_an_unreachable_server_fails_as_through_httpx() -> None:
    """Breakage caught: a refused connection escaping as ``ConnectionRefusedError`` (a
    traceback on the command line) or worded differently from httpx's failure."""
    url = "http://127.0.0.1:9"
    with Client(url, http=plainhttp.PlainHTTP(url)) as plain, Client(url) as reference:
        with pytest.raises(exceptions.ServerUnreachable) as through_plain:
            plain.list_tickets()
        with pytest.raises(exceptions.ServerUnreachable) as through_httpx:
            reference.list_tickets()
    assert str(through_plain.value) == str(through_httpx.value)
    assert "cannot reach corral at http://127.0.0.1:9" in str(through_plain.value)


def test_an_answer_too_slow_is_a_timeout() -> None:
    """Breakage caught: a read timeout not reported as the server not answering in time."""
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()  # accepts the connection, never answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with Client(url, timeout=0.2, http=plainhttp.PlainHTTP(url)) as plain:
            with pytest.raises(exceptions.ServerUnreachable, match=r"no answer within 0\.2 s"):
                plain.list_tickets()
