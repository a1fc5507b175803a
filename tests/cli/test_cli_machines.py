"""Issue 15's commands: ``corral vm add``, ``vm forget``, ``vm return``, ``pool info``.

What each test catches: an error that is not one ``error:`` line with the documented exit code;
``vm forget`` forcing by default; ``pool info`` storing a number as text (or text as an error);
``--delete`` misread; bad input sent to the server instead of refused locally.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli import machines
from corral.cli.main import app

runner = CliRunner()


def run(server: BackgroundServer, *args: str, token: str = ADMIN_TOKEN) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": token})


def one_error_line(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize(
    ("text", "value"),
    [("12", 12), ("true", True), ('{"a": [1]}', {"a": [1]}), ('"12"', "12"), ("f41", "f41")],
)
def test_info_values_are_json_or_text(text: str, value: object) -> None:
    assert machines.parse_value(text) == value


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (["vm", "add", "m-1", "192.0.2.1", "--pool", "nope"], 5, ["nope"]),
        (["vm", "add", "m-1", "999.0.0.1", "--pool", "small"], 3, ["address"]),
        (["vm", "add", "small-000777", "192.0.2.1", "--pool", "small"], 3, ["naming scheme"]),
        (["vm", "add", "ghost-1", "192.0.2.1", "--pool", "small"], 6, ["livecheck failed"]),
        (["vm", "forget", "nope-1"], 5, ["nope-1"]),
        (["vm", "return", "m9"], 5, ["m9"]),
        (["vm", "maintenance", "m9", "--reason", "disk"], 5, ["m9"]),
        (["vm", "maintenance", "m9", "--reason", " "], 3, ["--reason"]),
        (["pool", "info", "nope"], 5, ["nope"]),
        (["pool", "info", "small", "--delete"], 3, ["--delete"]),
        (["pool", "info", "small", "k", "1", "--delete"], 3, ["--delete"]),
        (["pool", "info", "small", "bad key", "1"], 3, ["info key"]),
        (["pool", "info", "small", "missing"], 5, ["missing"]),
    ],
)
def test_errors_are_one_line(
    server: BackgroundServer, args: list[str], code: int, words: list[str]
) -> None:
    one_error_line(run(server, *args), code, *words)


def test_writes_need_an_admin(server: BackgroundServer) -> None:
    one_error_line(run(server, "pool", "info", "small", "k", "1", token=ALICE_TOKEN), 4)
    one_error_line(run(server, "vm", "forget", "x", token=ALICE_TOKEN), 4)


def test_pool_info_set_get_list_delete(server: BackgroundServer) -> None:
    assert run(server, "pool", "info", "other", "build", "17").stdout.strip() == (
        "pool other: build = 17"
    )
    assert run(server, "pool", "info", "other", "chroot", "fedora-41").exit_code == 0
    assert run(server, "pool", "info", "other", "build").stdout.strip() == "17"
    listed = run(server, "pool", "info", "other")
    assert listed.stdout.splitlines() == ["build = 17", 'chroot = "fedora-41"']
    as_json = json.loads(run(server, "pool", "info", "other", "--json").stdout)
    assert as_json == {"build": 17, "chroot": "fedora-41"}
    read = run(server, "pool", "info", "other", "chroot", "--json", token=ALICE_TOKEN)
    assert json.loads(read.stdout) == {"pool": "other", "key": "chroot", "value": "fedora-41"}
    for key in ("build", "chroot"):
        gone = run(server, "pool", "info", "other", key, "--delete")
        assert gone.stdout.strip() == f"pool other: {key} removed"
    assert run(server, "pool", "info", "other").stdout.strip() == "pool other has no info"


def test_forget_a_ready_vm(server: BackgroundServer) -> None:
    deadline = time.monotonic() + 20
    ready: list[str] = []
    while not ready and time.monotonic() < deadline:
        vms = json.loads(run(server, "vms", "--pool", "small", "--json").stdout)
        ready = [v["name"] for v in vms if v["state"] == "ready"]
        time.sleep(0.05)
    assert ready, "no ready VM in time"
    done = run(server, "vm", "forget", ready[0])
    assert done.exit_code == 0, done.output
    assert done.stdout.startswith(f"VM {ready[0]} (small): forgotten, the machine is left")
    shown = json.loads(run(server, "vm", "show", ready[0], "--json").stdout)
    assert shown["external"] is True
    text = run(server, "vm", "show", ready[0]).stdout
    assert "  external: yes: corral never destroys it" in text.splitlines()
