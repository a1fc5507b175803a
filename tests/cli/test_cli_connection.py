"""Connection details end to end (issue 12): a script pool's ``new`` prints them, tickets and VMs
show them, ``corral acquire -- CMD`` puts them in the command's environment.

What each test catches: details dropped between the backend's handle and the API (the VM, one
ticket, a listing of several assigned tickets: each takes a different path), not shown by
``ticket show``, or missing from the command's environment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from apitools import ADMIN_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.client import Client
from corral.config import parse_config

runner = CliRunner()
DETAILS = {"port": "2022", "user": "builder"}


@pytest.fixture(scope="module")
def scripted() -> Iterator[BackgroundServer]:
    new = 'echo \'{"address": "10.0.0.9", "user": "builder", "port": 2022}\''
    raw = {
        "store": "memory://",
        "api": {"tokens": {ADMIN_TOKEN: {"owner": "root", "role": "admin"}}},
        "pools": {
            "s": {
                "backend": {"type": "script", "new": ["sh", "-c", new], "delete": ["true"]},
                "max": 2,
                "max_starting": 2,
                "min_ready": 2,
            }
        },
    }
    with BackgroundServer(parse_config(raw, env={})) as running:
        yield running


def test_tickets_and_vms_show_the_details(scripted: BackgroundServer) -> None:
    with Client(scripted.url, token=ADMIN_TOKEN) as c:
        with c.acquire(pool="s", timeout=30) as one, c.acquire(pool="s", timeout=30) as two:
            assert one.address == "10.0.0.9" and one.connection == DETAILS
            assert one.vm is not None and c.get_vm(one.vm).connection == DETAILS
            listed = {t.id: t.connection for t in c.list_tickets(state="assigned")}
            assert listed == {one.id: DETAILS, two.id: DETAILS}
            shown = runner.invoke(
                app,
                ["ticket", "show", one.id],
                env={"CORRAL_URL": scripted.url, "CORRAL_TOKEN": ADMIN_TOKEN},
            )
            assert shown.exit_code == 0, shown.output
            assert "connection: port=2022, user=builder" in shown.stdout


def test_acquire_command_gets_the_details(scripted: BackgroundServer) -> None:
    check = 'test "$CORRAL_CONNECTION_USER" = builder && test "$CORRAL_CONNECTION_PORT" = 2022'
    result = runner.invoke(
        app,
        ["acquire", "--pool", "s", "--timeout", "30", "--", "sh", "-c", check],
        env={"CORRAL_URL": scripted.url, "CORRAL_TOKEN": ADMIN_TOKEN},
    )
    assert result.exit_code == 0, result.output
