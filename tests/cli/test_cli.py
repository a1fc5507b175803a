"""The ``corral`` command with Typer's CliRunner against a real server on a loopback port."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit

runner = CliRunner()


def run(server: BackgroundServer | None, *args: str, token: str | None = ADMIN_TOKEN) -> Any:
    env = {"CORRAL_URL": server.url if server else "http://127.0.0.1:9"}
    if token:
        env["CORRAL_TOKEN"] = token
    return runner.invoke(app, list(args), env=env)


def run_json(server: BackgroundServer, *args: str, token: str | None = ADMIN_TOKEN) -> Any:
    result = run(server, *args, "--json", token=token)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_acquire_release_cycle(server: BackgroundServer) -> None:
    ticket = run_json(server, "acquire", "--pool", "small", "--timeout", "10", token=ALICE_TOKEN)
    assert ticket["state"] == "assigned"
    assert ticket["owner"] == "alice"
    assert ticket["vm"] and ticket["address"]
    listed = run_json(server, "tickets", token=ALICE_TOKEN)
    assert [t["id"] for t in listed] == [ticket["id"]]
    released = run_json(server, "release", ticket["id"], token=ALICE_TOKEN)
    assert released["state"] == "closed"
    again = run_json(server, "release", ticket["id"], token=ALICE_TOKEN)
    assert again["state"] == "closed", "releasing twice is harmless"
    other = run(server, "release", "no-such-ticket", token=ALICE_TOKEN)
    assert other.exit_code == Exit.NOT_FOUND


def test_acquire_for_people(server: BackgroundServer) -> None:
    result = run(server, "acquire", "--tag", "fedora", "--timeout", "10", token=ALICE_TOKEN)
    assert result.exit_code == 0, result.output
    assert "assigned VM" in result.stdout
    assert "corral release" in result.stdout
    ticket_id = result.stdout.split()[1]
    assert run(server, "release", ticket_id, token=ALICE_TOKEN).exit_code == 0
    # CliRunner's output is not a terminal: no spinner frames anywhere.
    assert "waiting for a VM" not in result.output


def test_acquire_needs_pool_or_tag(server: BackgroundServer) -> None:
    result = run(server, "acquire")
    assert result.exit_code == Exit.INVALID
    assert "--pool" in result.stderr


def test_acquire_timeout_exit_code(server: BackgroundServer) -> None:
    held = run_json(server, "acquire", "--pool", "tiny", "--timeout", "10")  # its only VM
    result = run(server, "acquire", "--pool", "tiny", "--timeout", "0.3")
    assert result.exit_code == Exit.TIMEOUT
    assert "ticket_timeout" in result.stderr
    waiting = run_json(server, "tickets", "--state", "waiting")
    assert waiting == [], "the timed-out ticket is cancelled"
    run_json(server, "release", held["id"])


def test_admin_listings(server: BackgroundServer) -> None:
    pools = run_json(server, "pools")
    assert {p["name"] for p in pools} == {"small", "other", "tiny"}
    ticket = run_json(server, "acquire", "--pool", "small", "--timeout", "10")
    vms = run_json(server, "vms", "--pool", "small")
    assert ticket["vm"] in {v["name"] for v in vms}
    assert isinstance(run_json(server, "tasks"), list)
    assert isinstance(run_json(server, "locks"), list)
    status = run_json(server, "status")
    assert status["health"]["status"] == "ok"
    for command in (["pools"], ["vms"], ["tickets"], ["tasks"], ["locks"], ["status"]):
        result = run(server, *command)
        assert result.exit_code == 0, (command, result.output)
    table = run(server, "pools")
    assert "small" in table.stdout and "other" in table.stdout
    run_json(server, "release", ticket["id"])


def test_vm_terminate(server: BackgroundServer) -> None:
    ticket = run_json(server, "acquire", "--pool", "small", "--timeout", "10")
    vm = run_json(server, "vm", "terminate", ticket["vm"])
    assert vm["name"] == ticket["vm"]
    assert vm["state"] in {"terminating", "terminated"}
    missing = run(server, "vm", "terminate", "no-such-vm")
    assert missing.exit_code == Exit.NOT_FOUND
    assert "vm_not_found" in missing.stderr


def test_task_commands_on_unknown_task(server: BackgroundServer) -> None:
    for sub in ("show", "stop", "rollback", "clean"):
        result = run(server, "task", sub, "no-such-task")
        assert result.exit_code == Exit.NOT_FOUND, (sub, result.output)
        assert "task_not_found" in result.stderr


def test_user_token_cannot_do_admin_things(server: BackgroundServer) -> None:
    for command in (["pools"], ["vms"], ["tasks"], ["locks"], ["vm", "terminate", "x"]):
        result = run(server, *command, token=ALICE_TOKEN)
        assert result.exit_code == Exit.AUTH, command
        assert "forbidden" in result.stderr


def test_bad_or_missing_token(server: BackgroundServer) -> None:
    assert run(server, "tickets", token=None).exit_code == Exit.AUTH
    bad = run(server, "tickets", token="not-a-real-token")  # noqa: S106
    assert bad.exit_code == Exit.AUTH
    assert "not-a-real-token" not in bad.output, "tokens are never echoed"


def test_unreachable_server() -> None:
    result = run(None, "tickets")
    assert result.exit_code == Exit.UNREACHABLE
    assert "server_unreachable" in result.stderr


def test_help_shows_environment_variables() -> None:
    result = runner.invoke(app, ["acquire", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "CORRAL_URL" in result.stdout
    assert "CORRAL_TOKEN" in result.stdout
    serve = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "CORRAL_STORE" in serve.stdout


def test_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "store: memory://\n"
        "pools:\n"
        "  p:\n"
        "    backend: {type: fake}\n"
        "    max: 2\n"
        "    max_starting: 1\n"
        "    min_ready: 1\n"
    )
    result = runner.invoke(app, ["config", "check", str(good)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "store: ftp://x\n"
        "colour: red\n"
        "pools:\n"
        "  p:\n"
        "    backend: {type: fake}\n"
        "    max: 2\n"
        "    max_starting: 5\n"
        "    min_ready: 1\n"
    )
    result = runner.invoke(app, ["config", "check", str(bad)])
    assert result.exit_code == Exit.INVALID
    for problem in ("store", "colour", "max_starting"):
        assert problem in result.stderr, problem
    missing = runner.invoke(app, ["config", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == Exit.INVALID


def test_db_upgrade(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    result = runner.invoke(app, ["db", "upgrade", "--db", url])
    assert result.exit_code == 0, result.output
    assert "revision" in result.stdout
    bad = runner.invoke(app, ["db", "upgrade", "--db", "ftp://nowhere"])
    assert bad.exit_code == Exit.INVALID


@pytest.mark.parametrize("args", [["acquire", "--pool"], ["release"], ["vm", "hold"]])
def test_usage_errors(args: list[str]) -> None:
    assert runner.invoke(app, args).exit_code == Exit.USAGE


def test_spinner_only_on_a_terminal(server: BackgroundServer, monkeypatch: Any) -> None:
    import io

    from rich.console import Console

    from corral.cli import output

    screen = io.StringIO()
    monkeypatch.setattr(output, "errors", Console(file=screen, force_terminal=True, width=100))
    held = run_json(server, "acquire", "--pool", "tiny", "--timeout", "10")  # --json: no spinner
    assert screen.getvalue() == ""
    result = run(server, "acquire", "--pool", "tiny", "--timeout", "0.5")  # waits, then gives up
    assert result.exit_code == Exit.TIMEOUT
    assert "waiting for a VM" in screen.getvalue()
    run_json(server, "release", held["id"])


def test_help_lists_each_command_on_one_line() -> None:
    """Catches the commands list of ``corral --help`` keeping the docstrings' line breaks (Typer's
    rich mode does): summaries were cut mid-sentence into ragged lines ("saying when the" /
    "list was cut")."""
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "300"}, terminal_width=300)
    assert result.exit_code == 0, result.output
    (line,) = [text for text in result.output.splitlines() if "│ tickets " in text]
    assert "saying when the list was cut; --all or --state for closed ones" in line
