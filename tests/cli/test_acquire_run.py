"""``corral acquire --pool P -- CMD``: the command runs holding a VM (issue 12, Maintenance).

What each test catches: the VM not in the command's environment; the command's exit status not
becoming corral's; the ticket left open after the command (or after a command that cannot
start); a SIGTERM sent to corral not reaching the command, or corral dying before releasing;
the lease not renewed while the command runs (a short ttl would expire the ticket).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from apitools import ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli import run as cli_run
from corral.cli.main import app
from corral.cli.output import Exit
from corral.client import Client, models

runner = CliRunner()


def run(server: BackgroundServer, *args: str) -> Any:
    env = {"CORRAL_URL": server.url, "CORRAL_TOKEN": ALICE_TOKEN}
    return runner.invoke(app, list(args), env=env)


def tickets_of(server: BackgroundServer, run_id: str) -> list[models.Ticket]:
    with Client(server.url, token=ALICE_TOKEN) as c:
        return c.list_tickets(meta={"run": run_id})


def test_the_command_gets_the_vm_and_gives_its_status(
    server: BackgroundServer, tmp_path: Path
) -> None:
    run_id = uuid.uuid4().hex
    dump = tmp_path / "env.json"
    script = (
        "import json, os, sys; "
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('CORRAL_')}}, "
        f"open({str(dump)!r}, 'w')); sys.exit(3)"
    )
    result = run(
        server, "acquire", "--pool", "small", "--timeout", "20", "--meta", f"run={run_id}",
        "--", sys.executable, "-c", script,
    )  # fmt: skip
    assert result.exit_code == 3, result.output
    env = json.loads(dump.read_text())
    (ticket,) = tickets_of(server, run_id)
    assert ticket.state == "closed", "released when the command exited"
    assert env["CORRAL_TICKET"] == ticket.id
    assert env["CORRAL_VM"] == ticket.vm and env["CORRAL_ADDRESS"]
    assert env["CORRAL_POOL"] == "small" and env["CORRAL_OWNER"] == "alice"
    assert env["CORRAL_META_RUN"] == run_id
    assert "CORRAL_TOKEN" in env, "the caller's environment is kept"
    assert f"ticket {ticket.id} released" in result.stderr


def test_a_command_that_cannot_run_takes_no_vm(server: BackgroundServer) -> None:
    run_id = uuid.uuid4().hex
    result = run(
        server, "acquire", "--pool", "small", "--meta", f"run={run_id}",
        "--", "/no/such/program-xyz",
    )  # fmt: skip
    assert result.exit_code == Exit.INVALID, result.output
    assert "program-xyz" in result.stderr and "not found" in result.stderr
    assert tickets_of(server, run_id) == []
    both = run(server, "acquire", "--pool", "small", "--json", "--", "true")
    assert both.exit_code == Exit.INVALID and "--json" in both.stderr


def test_exit_status_of_a_signalled_command() -> None:
    assert cli_run.exit_status(0) == 0
    assert cli_run.exit_status(4) == 4
    assert cli_run.exit_status(-signal.SIGTERM) == 128 + signal.SIGTERM


@pytest.mark.timeout(120)
def test_signals_reach_the_command_and_the_lease_is_renewed(
    server: BackgroundServer, tmp_path: Path
) -> None:
    """A real ``corral`` process: SIGTERM to corral reaches the command, which exits 7; corral
    exits 7 and releases. The ttl of 2 s is renewed while the command runs for longer."""
    run_id = uuid.uuid4().hex
    started, got = tmp_path / "started", tmp_path / "got"
    child = textwrap.dedent(
        f"""
        import signal, sys, time, pathlib
        def bye(signum, frame):
            pathlib.Path({str(got)!r}).write_text(str(signum))
            sys.exit(7)
        signal.signal(signal.SIGTERM, bye)
        pathlib.Path({str(started)!r}).write_text("up")
        time.sleep(120)
        """
    )
    env = {**os.environ, "CORRAL_URL": server.url, "CORRAL_TOKEN": ALICE_TOKEN}
    corral = subprocess.Popen(
        [
            sys.executable, "-m", "corral.cli", "acquire", "--pool", "small", "--ttl", "2",
            "--timeout", "30", "--meta", f"run={run_id}", "--", sys.executable, "-c", child,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not started.exists():
            assert corral.poll() is None, corral.communicate()
            assert time.monotonic() < deadline, "the command never started"
            time.sleep(0.05)
        time.sleep(5)  # more than two leases of 2 s: unrenewed, the ticket would expire
        (ticket,) = tickets_of(server, run_id)
        assert ticket.state == "assigned", ticket
        corral.send_signal(signal.SIGTERM)
        out, err = corral.communicate(timeout=60)
    finally:
        if corral.poll() is None:
            corral.kill()
    assert corral.returncode == 7, (out, err)
    assert got.read_text() == str(int(signal.SIGTERM))
    (ticket,) = tickets_of(server, run_id)
    assert ticket.state == "closed", "released after the command ended"
