"""``corral acquire`` and the lease (issue 8 item 2), and ``--json`` on the server-side commands.

What each test catches: ``acquire`` not saying when the ticket lapses or how to extend it,
``--ttl`` dropped, a waiting ``acquire`` whose ticket expires under it, ``config check`` and
``db upgrade`` without machine-readable output.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit
from corral.client import Client

runner = CliRunner()


def run(server: BackgroundServer, *args: str, token: str = ALICE_TOKEN) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": token})


def test_acquire_prints_the_lease_and_how_to_extend_it(server: BackgroundServer) -> None:
    result = run(server, "acquire", "--pool", "small", "--timeout", "10")
    assert result.exit_code == 0, result.output
    ticket_id = result.stdout.split()[1]
    lease = next(line for line in result.stdout.splitlines() if line.startswith("lease:"))
    assert "expires at" in lease and "(in 900 s)" in lease, "the pool's ticket_ttl (default)"
    assert f"corral renew {ticket_id}" in lease and "--ttl" in lease
    assert f"corral release {ticket_id}" in result.stdout
    renewed = run(server, "renew", ticket_id)
    assert renewed.exit_code == 0 and "lease until" in renewed.stdout
    assert run(server, "release", ticket_id).exit_code == 0


def test_acquire_ttl(server: BackgroundServer) -> None:
    result = run(server, "acquire", "--pool", "small", "--timeout", "10", "--ttl", "120", "--json")
    assert result.exit_code == 0, result.output
    ticket = json.loads(result.stdout)
    assert ticket["ttl"] == 120
    assert 0 < ticket["expires_at"] - time.time() <= 120
    assert run(server, "release", ticket["id"]).exit_code == 0


@pytest.mark.timeout(180)
def test_a_waiting_acquire_keeps_its_ticket(server: BackgroundServer) -> None:
    """A lease of 2 s and a wait of more than three leases: the ticket must not expire."""
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        held = admin.wait_ticket(admin.create_ticket(pool="tiny", ttl=600).id, timeout=10)
        outcome: dict[str, Any] = {}

        def release_later() -> None:
            deadline = time.monotonic() + 60
            waiting: list[Any] = []
            while not waiting and time.monotonic() < deadline:
                waiting = [t for t in admin.list_tickets(state="waiting") if t.pool == "tiny"]
            if waiting:
                since = time.monotonic()
                while time.monotonic() - since < 7 and time.monotonic() < deadline:
                    time.sleep(0.2)  # an observation window, not a synchronisation
                outcome["state"] = admin.get_ticket(waiting[0].id).state
            admin.close_ticket(held.id)

        releaser = threading.Thread(target=release_later)
        releaser.start()
        try:
            result = run(server, "acquire", "--pool", "tiny", "--ttl", "2", "--timeout", "120")
        finally:
            releaser.join()
    assert outcome.get("state") == "waiting", outcome
    assert result.exit_code == 0, result.output
    assert "assigned VM" in result.stdout
    run(server, "release", result.stdout.split()[1])


def test_config_check_json(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("store: memory://\npools:\n  p: {backend: {type: fake}, max: 2}\n")
    result = runner.invoke(app, ["config", "check", str(good), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "file": str(good),
        "valid": True,
        "store": "memory://",
        "pools": ["p"],
        "tokens": 0,
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text("pools:\n  p: {backend: {type: fake}, max: '2', max_prealloc: 1}\n")
    result = runner.invoke(app, ["config", "check", str(bad), "--json"])
    assert result.exit_code == Exit.INVALID
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["code"] == "config_error"
    assert len(report["problems"]) == 2
    assert any(p.startswith("pools.p.max: must be an integer") for p in report["problems"])


def test_db_upgrade_json(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["store"] == url and report["revision"]
