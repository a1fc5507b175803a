"""The operators' commands (issue 12): pool pause/resume/drain, vm hold/release-hold, audit,
reconcile --dry-run, config reload.

What each test catches: a duration parsed wrongly (``90m`` as 90 s) or a bad one sent to the
server instead of refused in one line; ``--dry-run`` of a drain draining; the audit not
showing who did what; ``reconcile`` acting without ``--dry-run``.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.cli import operate
from corral.cli.main import app

runner = CliRunner()


def run(server: BackgroundServer, *args: str, token: str = ADMIN_TOKEN) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": token})


def run_json(server: BackgroundServer, *args: str) -> Any:
    result = run(server, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_error_line(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90m", 5400.0),
        ("2h", 7200.0),
        ("1d", 86400.0),
        ("45s", 45.0),
        ("30", 30.0),
        ("1.5h", 5400.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert operate.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2x", "-1h", "0m", "8d", "h", "1 d 2h", "nan"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(exceptions.InvalidInput, match="--for"):
        operate.parse_duration(text)


def _ready_vm(server: BackgroundServer, pool: str = "small") -> str:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        vms = run_json(server, "vms", "--pool", pool)
        ready = [v["name"] for v in vms if v["state"] == "ready"]
        if ready:
            return ready[0]
        time.sleep(0.05)
    raise AssertionError("no ready VM in time")


def test_hold_and_release_hold(server: BackgroundServer) -> None:
    vm = _ready_vm(server)
    one_error_line(run(server, "vm", "hold", vm, "--for", "2x"), 3, "--for", "2x")
    assert run_json(server, "vm", "show", vm)["state"] == "ready"  # nothing was sent
    held = run_json(server, "vm", "hold", vm, "--for", "2h")
    assert held["state"] == "held"
    assert held["hold_until"] - held["state_since"] == pytest.approx(7200, abs=5)
    shown = run(server, "vm", "hold", vm, "--for", "90m")  # extends the hold
    assert shown.exit_code == 0 and f"VM {vm} (small): held until" in shown.stdout
    one_error_line(run(server, "vm", "hold", vm, token=ALICE_TOKEN), 4, "admin")
    released = run(server, "vm", "release-hold", vm)
    assert released.exit_code == 0 and "hold released" in released.stdout
    one_error_line(run(server, "vm", "release-hold", vm), 6, "not held")
    trail = run(server, "audit", "--vm", vm)
    lines = trail.stdout.strip().splitlines()
    assert trail.exit_code == 0 and len(lines) == 3
    assert "root  release-hold vm " + vm in lines[0]
    assert "root  hold vm " + vm in lines[2]
    assert [e["action"] for e in run_json(server, "audit", "--vm", vm, "--limit", "1")] == [
        "release-hold"
    ]
    one_error_line(run(server, "audit", "--vm", vm, "--pool", "small"), 3, "not both")
    shown = run(server, "vm", "show", vm).stdout  # the trail shown where the VM is
    assert "operators' actions (newest first):" in shown
    assert "root  release-hold vm " + vm in shown


def test_pause_resume_and_drain_dry_run(server: BackgroundServer) -> None:
    assert run(server, "pool", "pause", "small").stdout.strip() == "pool small: paused"
    assert run_json(server, "pool", "show", "small")["mode"] == "paused"
    assert run(server, "pool", "resume", "small").stdout.strip() == "pool small: active"
    vm = _ready_vm(server)
    dry = run(server, "pool", "drain", "small", "--dry-run")
    assert dry.exit_code == 0 and f"would terminate {vm}" in dry.stdout
    assert run_json(server, "vm", "show", vm)["state"] == "ready"
    assert run_json(server, "pool", "show", "small")["mode"] == "active"
    one_error_line(run(server, "pool", "drain", "nope"), 5, "nope")
    assert [e["action"] for e in run_json(server, "audit", "--pool", "small")][:2] == [
        "resume",
        "paused",
    ]
    shown = run(server, "pool", "show", "small").stdout
    assert "root  resume pool small" in shown and "root  paused pool small" in shown


def test_reconcile_dry_run_and_reload(server: BackgroundServer) -> None:
    done = run(server, "reconcile", "--dry-run")
    assert done.exit_code == 0, done.output
    assert "nothing to do" in done.stdout
    assert [r["pool"] for r in run_json(server, "reconcile", "--dry-run")] == [
        "other",
        "small",
        "tiny",
    ]
    one_error_line(run(server, "reconcile"), 3, "--dry-run")
    one_error_line(run(server, "config", "reload"), 3, "config_error", "without --config")
