"""The operator's maintenance commands (issue 12, "Maintenance"; ticket metadata of issue 15).

What each test catches: a ``show`` command missing or dropping a field (the ticket's metadata,
the pool's health); ``tickets`` listing closed tickets by default, ignoring ``--limit`` or
cutting silently; metadata not stored, not shown or not searchable (tickets and VMs);
``--if-state`` ignored (an in-use VM terminated anyway) or a bad state name accepted;
``status --pool`` not reaching the summary; a failing pool not making ``status`` exit 10.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, controller_class
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit
from corral.config import parse_config

runner = CliRunner()


def run(server: BackgroundServer, *args: str, token: str = ADMIN_TOKEN) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": token})


def run_json(server: BackgroundServer, *args: str, token: str = ADMIN_TOKEN) -> Any:
    result = run(server, *args, "--json", token=token)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def one_error_line(result: Any, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def acquire(server: BackgroundServer, *args: str, token: str = ALICE_TOKEN) -> Any:
    return run_json(server, "acquire", "--timeout", "20", *args, token=token)


def test_show_commands(server: BackgroundServer) -> None:
    run_id = uuid.uuid4().hex
    ticket = acquire(server, "--pool", "small", "--meta", f"build={run_id}", "--meta", "arch=x86")
    assert ticket["meta"] == {"build": run_id, "arch": "x86"}, "meta stored and returned"

    shown = run_json(server, "ticket", "show", ticket["id"], token=ALICE_TOKEN)
    assert shown["meta"] == {"build": run_id, "arch": "x86"}
    text = run(server, "ticket", "show", ticket["id"], token=ALICE_TOKEN)
    assert text.exit_code == 0, text.output
    assert f"meta: arch=x86, build={run_id}" in text.stdout
    assert "state: assigned" in text.stdout and f"vm: {ticket['vm']}" in text.stdout

    table = run(server, "tickets", "--meta", f"build={run_id}", token=ALICE_TOKEN)
    assert f"build={run_id}" in table.stdout, "the tickets table shows metadata"
    human = run(server, "acquire", "--pool", "small", "--meta", "k=v", token=ALICE_TOKEN)
    assert human.exit_code == 0 and "[k=v]" in human.stdout.splitlines()[0]
    assert run(server, "release", human.stdout.split()[1], token=ALICE_TOKEN).exit_code == 0

    vm = run(server, "vm", "show", ticket["vm"])
    assert vm.exit_code == 0, vm.output
    assert f"VM {ticket['vm']}" in vm.stdout
    assert "state: in_use" in vm.stdout and f"ticket: {ticket['id']}" in vm.stdout
    assert run_json(server, "vm", "show", ticket["vm"])["ticket"] == ticket["id"]

    pool = run(server, "pool", "show", "small")
    assert pool.exit_code == 0, pool.output
    assert "pool small" in pool.stdout and "health: ok" in pool.stdout
    assert "mode: active" in pool.stdout
    assert "limits: max 4, max_starting 2, min_ready 1" in pool.stdout
    assert run_json(server, "pool", "show", "small")["problem"] is None

    one_error_line(run(server, "vm", "show", "no-such-vm"), Exit.NOT_FOUND, "vm_not_found")
    one_error_line(run(server, "pool", "show", "nope"), Exit.NOT_FOUND, "pool_not_found")
    one_error_line(
        run(server, "ticket", "show", "nope", token=ALICE_TOKEN), Exit.NOT_FOUND, "not_found"
    )
    one_error_line(run(server, "vm", "show", ticket["vm"], token=ALICE_TOKEN), Exit.AUTH)
    assert run(server, "release", ticket["id"], token=ALICE_TOKEN).exit_code == 0


def test_lookup_by_ticket_metadata(server: BackgroundServer) -> None:
    run_id = uuid.uuid4().hex
    ticket = acquire(server, "--pool", "small", "--meta", f"task={run_id}")
    other = acquire(server, "--pool", "small", "--meta", f"task={run_id}-other")
    try:
        found = run_json(server, "vms", "--meta", f"task={run_id}")
        assert [v["name"] for v in found] == [ticket["vm"]], "the VM of that ticket only"
        assert run_json(server, "vms", "--meta", f"task={run_id}", "--pool", "other") == []
        listed = run_json(server, "tickets", "--meta", f"task={run_id}", token=ALICE_TOKEN)
        assert [t["id"] for t in listed] == [ticket["id"]]
        one_error_line(run(server, "vms", "--meta", "no-equals"), Exit.INVALID, "--meta")
        one_error_line(run(server, "tickets", "--meta", "=v"), Exit.INVALID, "--meta")
        one_error_line(
            run(server, "acquire", "--pool", "small", "--meta", "x", token=ALICE_TOKEN),
            Exit.INVALID,
            "--meta",
        )
    finally:
        for t in (ticket, other):
            run(server, "release", t["id"], token=ALICE_TOKEN)
    assert run_json(server, "vms", "--meta", f"task={run_id}") == [], "only open tickets' VMs"


def test_tickets_open_by_default_with_a_limit(server: BackgroundServer) -> None:
    run_id = uuid.uuid4().hex
    meta = ("--meta", f"run={run_id}")
    first = acquire(server, "--pool", "small", *meta)
    second = acquire(server, "--pool", "small", *meta)
    closed = acquire(server, "--pool", "small", *meta)
    assert run(server, "release", closed["id"], token=ALICE_TOKEN).exit_code == 0
    try:
        listed = run_json(server, "tickets", *meta, token=ALICE_TOKEN)
        assert {t["id"] for t in listed} == {first["id"], second["id"]}, "open ones only"
        everything = run_json(server, "tickets", "--all", *meta, token=ALICE_TOKEN)
        assert {t["id"] for t in everything} == {first["id"], second["id"], closed["id"]}
        only_closed = run_json(server, "tickets", "--state", "closed", *meta, token=ALICE_TOKEN)
        assert [t["id"] for t in only_closed] == [closed["id"]]
        both = run_json(server, "tickets", "--state", "closed,assigned", *meta, token=ALICE_TOKEN)
        assert len(both) == 3

        cut = run(server, "tickets", "--limit", "1", *meta, token=ALICE_TOKEN)
        assert cut.exit_code == 0, cut.output
        assert first["id"] in cut.stdout and second["id"] not in cut.stdout, "oldest first"
        assert "only the first 1 tickets are shown" in cut.stderr
        whole = run(server, "tickets", "--limit", "2", *meta, token=ALICE_TOKEN)
        assert "only the first" not in whole.stderr, "not cut: no note"
        assert len(run_json(server, "tickets", "--limit", "0", "--all", *meta)) == 3

        one_error_line(run(server, "tickets", "--all", "--state", "closed"), Exit.INVALID, "--all")
        one_error_line(run(server, "tickets", "--limit", "-1"), Exit.INVALID, "--limit")
        assert run(server, "tickets", "--state", "bogus").exit_code == Exit.INVALID
    finally:
        for t in (first, second):
            run(server, "release", t["id"], token=ALICE_TOKEN)


def test_terminate_only_in_the_states_given(server: BackgroundServer) -> None:
    ticket = acquire(server, "--pool", "small")
    name = ticket["vm"]
    refused = run(server, "vm", "terminate", name, "--if-state", "ready")
    one_error_line(refused, Exit.CONFLICT, "vm_state_mismatch", "in_use")
    assert run_json(server, "vm", "show", name)["state"] == "in_use", "nothing changed"
    assert run_json(server, "ticket", "show", ticket["id"])["state"] == "assigned"

    bogus = run(server, "vm", "terminate", name, "--if-state", "ready,bogus")
    one_error_line(bogus, Exit.INVALID, "bogus")
    one_error_line(run(server, "vm", "terminate", name, "--if-state", ","), Exit.INVALID)
    assert run_json(server, "vm", "show", name)["state"] == "in_use"

    done = run_json(server, "vm", "terminate", name, "--if-state", "ready", "--if-state", "in_use")
    assert done["state"] in ("terminating", "terminated")
    assert run_json(server, "ticket", "show", ticket["id"])["state"] == "failed"


def test_bulk_terminate_of_a_pool(server: BackgroundServer) -> None:
    ticket = acquire(server, "--pool", "small")
    unused = run_json(server, "vm", "terminate", "--pool", "small", "--unused", "--dry-run")
    assert ticket["vm"] not in {v["name"] for v in unused}
    assert run_json(server, "vm", "show", ticket["vm"])["state"] == "in_use", "a dry run"
    text = run(server, "vm", "terminate", "--pool", "small", "--state", "in_use", "--dry-run")
    assert text.exit_code == 0 and "would terminate" in text.stdout and ticket["vm"] in text.stdout
    done = run_json(server, "vm", "terminate", "--pool", "small", "--state", "in_use")
    assert ticket["vm"] in {v["name"] for v in done}
    assert run_json(server, "ticket", "show", ticket["id"])["state"] == "failed"
    one_error_line(run(server, "vm", "terminate"), Exit.INVALID, "--pool")
    one_error_line(run(server, "vm", "terminate", "x", "--pool", "small"), Exit.INVALID)
    one_error_line(run(server, "vm", "terminate", "x", "--unused"), Exit.INVALID, "--pool")
    one_error_line(
        run(server, "vm", "terminate", "--pool", "small", "--state", "bogus"), Exit.INVALID
    )


def test_status_reaches_the_pool_summary(server: BackgroundServer) -> None:
    result = run(server, "status", "--pool", "small")
    assert result.exit_code == 0, result.output
    assert "pool small (fake; max 4, max_starting 2, min_ready 1)" in result.stdout
    assert "pool other" not in result.stdout, "only the pool asked for"
    data = run_json(server, "status", "--pool", "small")
    assert data["summary"].startswith("pool small") and data["failing"] == {}
    one_error_line(run(server, "status", "--pool", "nope"), Exit.NOT_FOUND, "nope")
    whole = run(server, "status")
    assert whole.exit_code == 0 and "health" in whole.stdout


@pytest.fixture(scope="module")
def failing() -> Iterator[BackgroundServer]:
    """A server with a pool whose every spawn fails, beside a healthy one."""
    raw = {
        "store": "memory://",
        "api": {"tokens": {ADMIN_TOKEN: {"owner": "root", "role": "admin"}}},
        "pools": {
            "broken": {
                "backend": {"type": "fake", "spawn_failure_rate": 1.0},
                "max": 2,
                "min_ready": 1,
            },
            "fine": {"backend": {"type": "fake"}, "max": 2, "min_ready": 0},
        },
    }
    with BackgroundServer(parse_config(raw, env={}), factory=controller_class().create) as s:
        yield s


def test_status_fails_when_a_pool_is_failing(failing: BackgroundServer) -> None:
    deadline = time.monotonic() + 60
    while True:
        result = run(failing, "status")
        if result.exit_code != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.exit_code == Exit.FAILING, result.output
    assert "pool broken is FAILING" in result.stdout
    assert "injected spawn failure" in result.stdout, "the last reason is named"
    assert "pool fine is FAILING" not in result.stdout
    data = json.loads(run(failing, "status", "--json").stdout)
    assert set(data["failing"]) == {"broken"}
    assert run(failing, "status", "--pool", "fine").exit_code == 0, "a healthy pool alone: 0"
    shown = run(failing, "pool", "show", "broken")
    assert "health: FAILING" in shown.stdout and "last spawn error" in shown.stdout
