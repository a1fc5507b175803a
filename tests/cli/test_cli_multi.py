"""``corral acquire --count N --exclusive`` and how tickets and VMs of several machines show
(issue 15).

What each test catches: ``--count``/``--exclusive`` not passed on (one VM, a shared VM); the
command of ``acquire -- CMD`` not getting every VM (``CORRAL_VMS``/``CORRAL_ADDRESSES``) or the
VMs not released together when it exits; ``ticket show``/``vm show`` hiding the other VMs or a
VM's load; bad values taking a VM instead of one error line with the invalid-input exit code.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, controller_class
from multitools import multi_config
from typer.testing import CliRunner

from corral.api.server import BackgroundServer
from corral.cli.main import app
from corral.cli.output import Exit
from corral.client import Client, models

runner = CliRunner()


@pytest.fixture(scope="module")
def multi() -> Iterator[BackgroundServer]:
    with BackgroundServer(multi_config(), factory=controller_class().create) as running:
        yield running


def run(server: BackgroundServer, *args: str, token: str = ALICE_TOKEN) -> Any:
    return runner.invoke(app, list(args), env={"CORRAL_URL": server.url, "CORRAL_TOKEN": token})


def tickets_of(server: BackgroundServer, run_id: str) -> list[models.Ticket]:
    with Client(server.url, token=ALICE_TOKEN) as c:
        return c.list_tickets(meta={"run": run_id})


def loads(server: BackgroundServer, names: list[str]) -> list[int]:
    with Client(server.url, token=ADMIN_TOKEN) as c:
        return [c.get_vm(name).load for name in names]


def test_acquire_count_prints_every_vm_and_show_lists_them(multi: BackgroundServer) -> None:
    """Breakages caught: ``--count`` not passed on; ``ticket show``, ``tickets`` or the release
    line naming only the first VM; a VM of the ticket left held after ``release``."""
    run_id = uuid.uuid4().hex
    got = run(multi, "acquire", "--pool", "trio", "--count", "3", "--timeout", "30",
              "--meta", f"run={run_id}", "--json")  # fmt: skip
    assert got.exit_code == 0, got.output
    ticket = models.Ticket.from_json(json.loads(got.stdout))
    assert ticket.count == 3 and len(set(ticket.vms)) == 3
    text = run(multi, "ticket", "show", ticket.id)
    assert text.exit_code == 0, text.output
    assert "count: 3" in text.stdout
    for name, address in zip(ticket.vms, ticket.addresses, strict=True):
        assert f"{name} at {address}" in text.stdout, text.stdout
    vm = run(multi, "vm", "show", ticket.vms[1], token=ADMIN_TOKEN)
    assert f"ticket: {ticket.id}" in vm.stdout, vm.stdout
    listed = run(multi, "tickets", "--json")
    [row] = [t for t in json.loads(listed.stdout) if t["id"] == ticket.id]
    assert row["vms"] == ticket.vms and row["addresses"] == ticket.addresses
    table = run(multi, "tickets")
    assert table.exit_code == 0, table.output
    # the table lists every VM and address (narrow columns may cut the VMs' names short)
    assert ",".join(a or "-" for a in ticket.addresses) in table.stdout, table.stdout
    assert f"{ticket.vms[0]},{ticket.vms[1]}" in table.stdout, table.stdout
    released = run(multi, "release", ticket.id)
    assert released.exit_code == 0, released.output
    assert "VMs " in released.stdout and ticket.vms[2] in released.stdout, released.stdout
    assert loads(multi, ticket.vms) == [0, 0, 0]


def test_the_command_gets_every_vm_and_they_are_released_together(
    multi: BackgroundServer, tmp_path: Path
) -> None:
    """Breakage caught: ``CORRAL_VMS``/``CORRAL_ADDRESSES`` missing or out of order, the VMs
    not all released when the command exits."""
    run_id = uuid.uuid4().hex
    dump = tmp_path / "env.json"
    script = (
        "import json, os; "
        f"json.dump({{k: v for k, v in os.environ.items() if k.startswith('CORRAL_')}}, "
        f"open({str(dump)!r}, 'w'))"
    )
    result = run(
        multi, "acquire", "--pool", "trio", "--count", "2", "--timeout", "30",
        "--meta", f"run={run_id}", "--", sys.executable, "-c", script,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    env = json.loads(dump.read_text())
    (ticket,) = tickets_of(multi, run_id)
    assert ticket.state == "closed" and len(ticket.vms) == 2
    assert env["CORRAL_VMS"].split() == ticket.vms
    addresses = env["CORRAL_ADDRESSES"].split()
    assert len(addresses) == 2 and "-" not in addresses
    assert (env["CORRAL_VM"], env["CORRAL_ADDRESS"]) == (ticket.vms[0], addresses[0])
    assert loads(multi, ticket.vms) == [0, 0]


def test_exclusive_takes_a_whole_shared_vm_and_vm_show_says_so(multi: BackgroundServer) -> None:
    """Breakages caught: ``--exclusive`` not passed on (it would join the shared VM and not
    time out), ``vm show`` hiding the load, the tickets or the exclusive hold."""
    shared = run(multi, "acquire", "--pool", "shared", "--timeout", "30", "--json")
    assert shared.exit_code == 0, shared.output
    first = models.Ticket.from_json(json.loads(shared.stdout))
    joined = models.Ticket.from_json(
        json.loads(run(multi, "acquire", "--pool", "shared", "--timeout", "30", "--json").stdout)
    )
    assert joined.vm == first.vm, "two shared tickets on a 2-slot VM"
    vm = run(multi, "vm", "show", first.vm or "", token=ADMIN_TOKEN)
    assert "load: 2" in vm.stdout and joined.id in vm.stdout, vm.stdout
    # an exclusive ticket waits for the whole VM: it times out while the two hold it
    waited = run(multi, "acquire", "--pool", "shared", "--exclusive", "--timeout", "0.5")
    assert waited.exit_code == Exit.TIMEOUT, waited.output
    for t in (first, joined):
        assert run(multi, "release", t.id).exit_code == 0
    whole = run(multi, "acquire", "--pool", "shared", "--exclusive", "--timeout", "30", "--json")
    assert whole.exit_code == 0, whole.output
    ticket = models.Ticket.from_json(json.loads(whole.stdout))
    assert ticket.exclusive
    shown = run(multi, "ticket", "show", ticket.id)
    assert "exclusive: yes" in shown.stdout, shown.stdout
    vm = run(multi, "vm", "show", ticket.vm or "", token=ADMIN_TOKEN)
    assert "load: 1 (exclusive)" in vm.stdout, vm.stdout
    assert run(multi, "release", ticket.id).exit_code == 0


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--count", "0"], "count"),
        (["--count", "two"], "--count"),
        (["--count", "4"], "count 4"),
        (["--count", "1001"], "count"),
        (["--exclusive=yes"], "--exclusive"),
    ],
)
def test_bad_count_is_one_error_line_and_takes_nothing(
    multi: BackgroundServer, args: list[str], named: str
) -> None:
    """Breakage caught: a bad ``--count``/``--exclusive`` creating a ticket, or refused with
    another exit code or without naming the option."""
    run_id = uuid.uuid4().hex
    result = run(multi, "acquire", "--pool", "trio", "--meta", f"run={run_id}", *args)
    assert result.exit_code in (Exit.INVALID, 2), result.output  # 2: usage (click's own)
    assert named in result.stderr, result.stderr
    assert tickets_of(multi, run_id) == []
