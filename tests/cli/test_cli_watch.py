"""``corral events`` and ``corral vm logs NAME [--follow]`` (issue 12) against real servers.

What each test catches: ``events`` printing nothing (or not one JSON object per line with
``--json``), its ``--pool`` filter letting other pools through, a bad ``--kind`` sent to the
server instead of refused in one line; ``vm logs`` missing a command's stdout, stderr or exit
status, ``--follow`` stopping before the VM's last record (the ``delete`` run after the
terminate) or never stopping once the VM is terminated, or ending on Ctrl-C with a traceback
instead of exit status 130; an unknown VM not exiting 5.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli import watch
from corral.client import Client, sse
from corral.config import parse_config

runner = CliRunner()


def _app() -> typer.Typer:
    """The commands as ``corral`` registers them (``corral events``, ``corral vm logs``)."""
    app = typer.Typer()
    vm = typer.Typer()
    app.add_typer(vm, name="vm")
    watch.register(app, vm=vm)
    return app


APP = _app()


def run(url: str, *args: str, token: str = ADMIN_TOKEN) -> Any:
    return runner.invoke(APP, list(args), env={"CORRAL_URL": url, "CORRAL_TOKEN": token})


@pytest.fixture
def churn(server: BackgroundServer) -> Iterator[None]:
    """Alice creates and closes tickets of pool ``other`` until the test ends."""
    stop = threading.Event()

    def work() -> None:
        with Client(server.url, token=ALICE_TOKEN) as alice:
            while not stop.wait(0.05):
                alice.close_ticket(alice.create_ticket(pool="other").id)

    worker = threading.Thread(target=work)
    worker.start()
    yield
    stop.set()
    worker.join()


def test_events_json_lines_and_human_lines(server: BackgroundServer, churn: None) -> None:
    result = run(server.url, "events", "--kind", "ticket", "--count", "3", "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3
    for line in lines:
        event = json.loads(line)
        assert event["event"] == "ticket" and event["data"]["owner"] == "alice"
        assert isinstance(event["id"], int)
    result = run(server.url, "events", "--kind", "ticket", "--count", "1")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    assert " ticket " in line and "owner=alice" in line


def test_event_filter_and_lines_offline() -> None:
    ticket = sse.ServerEvent(
        5, "ticket", {"id": "t", "state": "assigned", "at": 0.0, "data": {"pool": "a", "vm": "a-1"}}
    )
    other = sse.ServerEvent(6, "vm", {"id": "b-1", "state": "ready", "data": {"pool": "b"}})
    pool = sse.ServerEvent(
        7, "pool", {"id": "a", "state": "ok", "data": {"vms": {"ready": 2}, "waiting": 1}}
    )
    resync = sse.ServerEvent(8, "resync", {"reason": "lost"})
    printed: list[str] = []
    count = watch.watch_events(
        iter([ticket, other, resync, pool]), json=False, pool="a", count=2, emit=printed.append
    )
    assert count == 2
    assert printed[0].endswith("ticket t assigned pool=a vm=a-1")
    assert printed[1] == "-- resync: lost: re-read the state"
    assert "pool a ok ready=2 waiting=1" in printed[2]
    assert len(printed) == 3  # the VM of pool b was left out


def test_events_refuses_an_unknown_kind(server: BackgroundServer) -> None:
    result = run(server.url, "events", "--kind", "tickets")
    assert result.exit_code == 3, result.output
    assert result.stderr.strip().startswith("error: invalid_input: --kind")


@pytest.fixture(scope="module")
def scripted() -> Iterator[BackgroundServer]:
    """A server with one script pool whose commands print on stdout and stderr."""
    raw = {
        "store": "memory://",
        "api": {"tokens": {ADMIN_TOKEN: {"owner": "root", "role": "admin"}}},
        "pools": {
            "s": {
                "backend": {
                    "type": "script",
                    "new": ["sh", "-c", "echo 10.0.0.7; echo 'booted fine' >&2"],
                    "delete": ["sh", "-c", "echo deleting; echo 'gone now' >&2; exit 0"],
                },
                "max": 1,
                "max_starting": 1,
                "min_ready": 1,
            }
        },
    }
    with BackgroundServer(parse_config(raw, env={})) as running:
        yield running


def _ready_vm(server: BackgroundServer) -> str:
    deadline = time.monotonic() + 20
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        while time.monotonic() < deadline:
            ready = admin.list_vms(pool="s", state="ready")
            if ready and admin.vm_logs(ready[0].name):
                return ready[0].name
            time.sleep(0.05)
    raise AssertionError("no ready VM with its log within 20 s")


def test_vm_logs_and_follow_until_terminated(scripted: BackgroundServer) -> None:
    name = _ready_vm(scripted)
    result = run(scripted.url, "vm", "logs", name, "--json")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert record["command"] == "new" and record["exit_status"] == 0
    assert record["stdout"] == "10.0.0.7\n" and "booted fine" in record["stderr"]
    human = run(scripted.url, "vm", "logs", name)
    assert human.exit_code == 0, human.output
    assert f"== new #{record['id']}" in human.stdout and "exit 0" in human.stdout
    assert "  booted fine" in human.stdout

    with Client(scripted.url, token=ADMIN_TOKEN) as admin:
        follow = watch.follow_logs(admin, name, follow=True, interval=0.05)
        assert next(follow).command == "new"
        admin.terminate_vm(name)
        rest = list(follow)  # ends by itself once the VM is terminated
    assert [r.command for r in rest] == ["delete"]
    assert rest[0].stdout == "deleting\n" and "gone now" in rest[0].stderr
    result = run(scripted.url, "vm", "logs", name, "--follow", "--interval", "0.05")
    assert result.exit_code == 0, result.output
    assert "== new" in result.stdout and "== delete" in result.stdout


def test_vm_logs_of_an_unknown_vm(scripted: BackgroundServer) -> None:
    result = run(scripted.url, "vm", "logs", "nope")
    assert result.exit_code == 5, result.output
    assert result.stderr.startswith("error: vm_not_found")


def test_vm_logs_of_a_vm_without_commands_says_so(server: BackgroundServer) -> None:
    """Catches ``vm logs`` printing nothing at all for a VM whose backend runs no command (the
    demo's fake backend): a new user could not tell it from a hang or a failure."""
    deadline = time.monotonic() + 20
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        while not (vms := admin.list_vms()) and time.monotonic() < deadline:
            time.sleep(0.05)
    assert vms, "no VM within 20 s"
    result = run(server.url, "vm", "logs", vms[0].name)
    assert result.exit_code == 0, result.output
    assert (
        result.stdout
        == f"no command logs for VM {vms[0].name} (its backend ran no command for it)\n"
    )
    result = run(server.url, "vm", "logs", vms[0].name, "--json")
    assert result.exit_code == 0 and result.stdout == "", result.output


def test_vm_logs_follow_ends_cleanly_on_ctrl_c(scripted: BackgroundServer) -> None:
    """Catches ``vm logs --follow`` not ending on Ctrl-C (the interrupt swallowed by the follow
    loop's wait) or ending with a traceback or "Aborted!" instead of exit status 130."""
    name = _ready_vm(scripted)
    env = {**os.environ, "CORRAL_URL": scripted.url, "CORRAL_TOKEN": ADMIN_TOKEN}
    command = [sys.executable, "-m", "corral.cli", "vm", "logs", name, "--follow"]
    with subprocess.Popen(
        [*command, "--interval", "0.05"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        assert process.stdout is not None
        first = process.stdout.readline()  # blocks until the record is printed
        assert first.startswith("== new #"), first
        process.send_signal(signal.SIGINT)
        try:
            out, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err and "Aborted" not in err, err
