"""``corral hosts`` against a real server on a single-host store: the host, alive, and the pools
it leads, as a table and as JSON."""

from __future__ import annotations

import json
from typing import Any

from apitools import ADMIN_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app


def run(server: BackgroundServer, *args: str) -> Any:
    env = {"CORRAL_URL": server.url, "CORRAL_TOKEN": ADMIN_TOKEN}
    return CliRunner().invoke(app, list(args), env=env)


def test_hosts_shows_the_host_alive_and_what_it_leads(server: BackgroundServer) -> None:
    """Breakages caught: the command not registered; leadership or liveness not shown."""
    result = run(server, "hosts", "--json")
    assert result.exit_code == 0, result.output
    (host,) = json.loads(result.output)
    assert host["alive"] and host["this"] and host["leads"]
    table = run(server, "hosts")
    assert table.exit_code == 0, table.output
    assert "alive" in table.output and host["host_id"] in table.output
    assert host["leads"][0] in table.output
