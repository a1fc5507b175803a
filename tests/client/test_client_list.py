"""List tickets through the clients (issue 15): ``acquire(requests=[...])`` yields every VM of
every entry together, in entry order, and gives them back together.

Each test names the breakage it catches.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, controller_class
from multitools import list_config

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.client import AsyncClient, Client, core

ENTRIES = [{"pool": "x86", "count": 2}, {"tags": ["s390x"]}]


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(list_config(), factory=controller_class().create) as running:
        yield running


def test_the_body_carries_the_entries_and_no_top_level_tags() -> None:
    """Breakage caught: ``requests`` dropped from the body, or sent with ``tags: []``."""
    call = core.create_ticket(requests=ENTRIES)
    assert call.body == {
        "priority": 0,
        "requests": [{"pool": "x86", "tags": [], "count": 2}, {"tags": ["s390x"], "count": 1}],
    }


@pytest.mark.parametrize(
    ("kw", "words"),
    [
        ({"requests": []}, "1 to 16"),
        ({"requests": {"pool": "x86"}}, "list of entries"),
        ({"requests": [{"pool": "x86", "tags": ["x"]}]}, r"requests\[0\] must name a pool"),
        ({"requests": [{"count": 2}]}, r"requests\[0\] must name a pool"),
        ({"requests": [{"pool": "x86", "count": 0}]}, r"requests\[0\]"),
        ({"requests": [{"pool": "x86", "size": 1}]}, r"requests\[0\]"),
        ({"requests": [{"pool": "x86"}], "pool": "x86"}, "cannot be combined"),
    ],
)
def test_bad_entries_are_refused_before_sending(kw: dict[str, object], words: str) -> None:
    """Breakage caught: the local checks removed (a pydantic error, or the server's answer)."""
    with pytest.raises(exceptions.InvalidInput, match=words):
        core.create_ticket(**kw)  # type: ignore[arg-type]


def test_acquire_a_list_yields_every_vm_and_releases_them_together(
    server: BackgroundServer,
) -> None:
    """Breakage caught: ``requests`` not passed through ``acquire`` (refused: no pool), a
    release freeing only the first VM."""
    with Client(server.url, token=ALICE_TOKEN) as client:
        with client.acquire(requests=ENTRIES, timeout=30) as ticket:
            assert [n.rsplit("-", 1)[0] for n in ticket.vms] == ["x86", "x86", "s390x"]
            assert len(ticket.addresses) == 3
            names = list(ticket.vms)
        with Client(server.url, token=ADMIN_TOKEN) as admin:
            assert [admin.get_vm(n).load for n in names] == [0, 0, 0]
        assert client.get_ticket(ticket.id).state == "closed"


async def test_the_async_client_acquires_a_list_too(server: BackgroundServer) -> None:
    """Breakage caught: the async client's ``acquire`` not taking ``requests``."""
    async with AsyncClient(server.url, token=ALICE_TOKEN) as client:
        async with client.acquire(requests=ENTRIES, timeout=30) as ticket:
            assert len(ticket.vms) == 3 and ticket.requests[1].tags == ["s390x"]
