"""``corral acquire --request ...``: list tickets on the command line (issue 15).

Each test names the breakage it catches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, controller_class
from multitools import list_config
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit
from corral.client import Client, models

runner = CliRunner()


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(list_config(), factory=controller_class().create) as running:
        yield running


def run(server: BackgroundServer, *args: str) -> Any:
    return runner.invoke(
        app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": ALICE_TOKEN}
    )


def test_acquire_request_entries_takes_every_vm_and_release_frees_them(
    server: BackgroundServer,
) -> None:
    """Breakage caught: ``--request`` not passed on (refused for want of a pool), tags or
    counts of an entry lost, ``tickets`` and ``ticket show`` without the entries, a release
    that frees only the first VM."""
    got = run(server, "acquire", "--request", "pool=x86,count=2", "--request", "tags=s390x",
              "--timeout", "30", "--json")  # fmt: skip
    assert got.exit_code == 0, got.output
    ticket = models.Ticket.from_json(json.loads(got.stdout))
    assert [n.rsplit("-", 1)[0] for n in ticket.vms] == ["x86", "x86", "s390x"]
    assert [(r.pool, r.tags, r.count) for r in ticket.requests] == [
        ("x86", [], 2),
        (None, ["s390x"], 1),
    ]
    listed = run(server, "tickets")
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if ticket.id in line)
    cells = [c.strip() for c in row.replace("│", "|").split("|")]
    assert "x86" in cells and "s390x" in cells, cells  # the entries' pool and tags, not blanks
    shown = run(server, "ticket", "show", ticket.id)
    assert shown.exit_code == 0, shown.output
    assert "2 of pool x86; 1 tagged s390x" in " ".join(shown.stdout.split()), shown.stdout
    released = run(server, "release", ticket.id)
    assert released.exit_code == 0, released.output
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        assert [admin.get_vm(n).load for n in ticket.vms] == [0, 0, 0]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--request", "pool"], "expected pool=NAME"),
        (["--request", "size=2"], "expected pool=NAME"),
        (["--request", "pool=x86,count=two"], "count must be a whole number"),
        (["--request", "pool=x86,pool=s390x"], "pool given twice"),
        (["--request", "pool=x86", "--pool", "x86"], "not with --pool"),
        (["--request", "pool=x86", "--count", "2"], "not with --pool, --tag or --count"),
        (["--request", "pool=x86,tags=x86"], "requests[0] must name a pool or give tags"),
        (["--request", "tags=arm"], "no pool has the tags"),
    ],
)
def test_bad_request_entries_are_one_error_line(
    server: BackgroundServer, args: list[str], words: str
) -> None:
    """Each is refused with one error line naming what is wrong and the invalid-input exit
    code, and takes no VM. Breakage caught: a malformed entry parsed leniently (``pool``
    with no value, an unknown key dropped), a mixed request sent."""
    got = run(server, "acquire", *args, "--timeout", "5")
    assert got.exit_code == Exit.INVALID, got.output
    assert words in got.output, got.output
    with Client(server.url, token=ALICE_TOKEN) as c:
        assert [t for t in c.list_tickets() if t.state == "assigned"] == []
