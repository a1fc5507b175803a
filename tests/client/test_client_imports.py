"""What a program using the client imports (issue 14: a client process's start is most of its
cost): neither pydantic nor httpx for a plain ``http://`` server.

What each test catches: an eager import of :mod:`corral.wire` (pydantic and the models' build,
about 0.2 s of CPU per process) or of httpx coming back into ``corral.client``, or a call on the
ticket path that needs them (a parser built with pydantic, the request body checked by the
model, the default transport back to httpx).
"""

from __future__ import annotations

import subprocess
import sys

from corral.api.server import BackgroundServer

HEAVY = ("pydantic", "pydantic_core", "httpx", "httpcore", "corral.wire", "asyncio")
"""Modules a client of a plain ``http://`` server never needs."""


def _loaded(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(done.stdout.split())


def _heavy(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in HEAVY or m in HEAVY)


def test_importing_the_client_loads_neither_pydantic_nor_httpx() -> None:
    loaded = _loaded(
        "from corral.client import Client, models\n"
        "Client('http://127.0.0.1:9').close()\n"
        "models.Ticket.from_json({'id': 't', 'owner': 'o', 'state': 'assigned'})"
    )
    assert "corral.client.records" in loaded
    assert _heavy(loaded) == []


def test_a_ticket_s_whole_life_loads_neither_pydantic_nor_httpx(server: BackgroundServer) -> None:
    """The bench's loop (create with a long-poll, wait, close) and a list, against a real
    server."""
    from apitools import ALICE_TOKEN  # tests/api, on the path through tests/client/conftest.py

    loaded = _loaded(
        "from corral.client import Client\n"
        f"with Client({server.url!r}, token={ALICE_TOKEN!r}) as c:\n"
        "    t = c.create_ticket(pool='small', wait=10)\n"
        "    t = c.wait_ticket(t.id, timeout=30)\n"
        "    assert t.state == 'assigned' and t.vm, t\n"
        "    assert c.close_ticket(t.id).state == 'closed'\n"
        "    assert [x.id for x in c.list_tickets(state='closed')]\n"
    )
    assert _heavy(loaded) == []
