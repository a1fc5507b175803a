"""Every failure of `corral` is one line with its code and exit code (issue 8 item 14).

What each test catches: a pydantic or SQLAlchemy traceback reaching the user, ``nan`` accepted as a
timeout, uvicorn's exit on a taken port, a configuration file read as anything but UTF-8, the
options given before the command ignored.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit

runner = CliRunner()
NOWHERE = "http://127.0.0.1:9"


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": NOWHERE, **(env or {})})


def one_line_error(result: Any, code: str) -> str:
    """The single stderr line of a failed command, checked to carry ``code``."""
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note: ")]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {code}: "), lines[0]
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--ttl", "-1"], "--ttl"),
        (["--ttl", "0"], "--ttl"),
        (["--ttl", "nan"], "--ttl"),
        (["--ttl", "inf"], "--ttl"),
        (["--priority", "99999999999999999999"], "--priority"),
        (["--priority", "-1000001"], "--priority"),
        (["--sandbox", ""], "--sandbox"),
        (["--sandbox", "s" * 256], "--sandbox"),
        (["--owner", ""], "--owner"),
        (["--owner", "o" * 256], "--owner"),
        (["--timeout", "nan"], "--timeout"),
        (["--timeout", "inf"], "--timeout"),
        (["--timeout", "-1"], "--timeout"),
    ],
)
def test_bad_acquire_options(args: list[str], option: str) -> None:
    result = invoke("acquire", "--pool", "demo", *args)
    assert result.exit_code == Exit.INVALID, result.output
    line = one_line_error(result, "invalid_input")
    assert f": {option}: " in line
    assert "pydantic" not in line and "Input should" not in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["tickets", "--state", "bogus"], "'bogus' (known: assigned, cancelled, closed"),
        (["tickets", "--state", "waiting,nope"], "'nope' (known: "),
        (["vms", "--state", "bogus"], "'bogus' (known: failed, forgotten, held, in_use"),
    ],
)
def test_unknown_state_is_named_before_anything_is_sent(args: list[str], named: str) -> None:
    """Catches a mistyped --state reaching the server, whose answer named its query field
    ("query field 'state.0': Input should be ...") instead of the option (here the server is
    unreachable: sending anything would exit 8)."""
    result = invoke(*args)
    assert result.exit_code == Exit.INVALID, result.output
    assert f": --state: unknown {named}" in one_line_error(result, "invalid_input")


@pytest.mark.parametrize("pool", ["", "p" * 256])
def test_bad_pool_name(pool: str) -> None:
    result = invoke("acquire", "--pool", pool)
    assert result.exit_code == Exit.INVALID
    assert ": --pool: " in one_line_error(result, "invalid_input")


def test_unreachable_database_is_one_line() -> None:
    result = invoke("db", "upgrade", "--db", "postgresql://nobody@127.0.0.1:1/x")
    assert result.exit_code == Exit.UNAVAILABLE, result.output
    line = one_line_error(result, "store_error")
    assert "postgresql://nobody@127.0.0.1:1/x" in line
    assert "sqlalche.me" not in line


def test_serve_on_an_unreachable_database_is_one_line() -> None:
    result = invoke("serve", "--db", "postgresql://nobody@127.0.0.1:1/x", "--port", "0")
    assert result.exit_code == Exit.UNAVAILABLE, result.output
    assert "Connection refused" in one_line_error(result, "store_error")


def test_missing_store_folder_is_refused_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/typo/corral.db"
    result = invoke("db", "upgrade", "--db", url)
    assert result.exit_code == Exit.INVALID
    assert "does not exist" in one_line_error(result, "config_error")
    assert not (tmp_path / "typo").exists()
    served = invoke("serve", "--db", url, "--port", "0")
    assert served.exit_code == Exit.INVALID
    assert not (tmp_path / "typo").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def test_serve_on_a_taken_port(taken_port: int) -> None:
    result = invoke("serve", "--db", "memory://", "--port", str(taken_port))
    assert result.exit_code == Exit.UNAVAILABLE, result.output
    assert f"127.0.0.1:{taken_port} is in use" in one_line_error(result, "address_in_use")


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_on_a_port_out_of_range(port: str) -> None:
    """Catches ``--port 99999`` reaching the socket's bind, whose ``OverflowError`` was a
    traceback (the configuration's own ``api.port`` check never sees the option)."""
    result = invoke("serve", "--db", "memory://", "--port", port)
    assert result.exit_code == Exit.INVALID, result.output
    assert f"--port: must be 0 to 65535, not {port}" in one_line_error(result, "invalid_input")


def test_serve_port_taken_after_the_check(taken_port: int, tmp_path: Path) -> None:
    """The port is taken between the check and uvicorn's bind (uvicorn then exits): still one
    error line, and no "Task exception was never retrieved" when the process ends."""
    script = (
        "import sys\n"
        "from corral.cli import admin, main\n"
        "admin._check_port = lambda host, port: None\n"
        f"sys.argv = ['corral', 'serve', '--db', 'memory://', '--port', '{taken_port}']\n"
        "main.main()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == Exit.UNAVAILABLE, done.stderr
    assert f"error: address_in_use: cannot listen on 127.0.0.1:{taken_port}" in done.stderr
    assert "Task exception was never retrieved" not in done.stderr
    assert "Traceback" not in done.stderr


def test_config_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_bytes(b"pools:\n  caf\xe9: {backend: {type: fake}}\n")
    result = invoke("config", "check", str(path))
    assert result.exit_code == Exit.INVALID
    assert "not UTF-8" in one_line_error(result, "config_error")


def test_options_before_the_command(server: BackgroundServer) -> None:
    env = {"CORRAL_URL": NOWHERE, "CORRAL_TOKEN": "wrong-token-000"}
    before = runner.invoke(
        app, ["--url", server.url, "--token", ALICE_TOKEN, "tickets", "--json"], env=env
    )
    assert before.exit_code == 0, before.output
    assert isinstance(json.loads(before.stdout), list)
    # the command's own option wins over the one before it
    after = runner.invoke(
        app, ["--url", NOWHERE, "--token", ALICE_TOKEN, "tickets", "--url", server.url], env=env
    )
    assert after.exit_code == 0, after.output
    nested = runner.invoke(
        app, ["--url", server.url, "--token", ADMIN_TOKEN, "vm", "terminate", "nope"], env=env
    )
    assert nested.exit_code == Exit.NOT_FOUND, nested.output
    # without options anywhere the environment is used
    from_env = runner.invoke(app, ["tickets"], env=env)
    assert from_env.exit_code == Exit.UNREACHABLE


def test_help_is_self_contained() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "docs/" not in result.stdout, "a pip install ships no docs folder"
    assert "Exit codes" in result.stdout and "7 acquire timed out" in result.stdout
    acquire = runner.invoke(app, ["acquire", "--help"], env={"COLUMNS": "200"})
    assert "ticket_ttl" in acquire.stdout and "corral renew" in acquire.stdout
    assert "stays open until released" not in acquire.stdout
