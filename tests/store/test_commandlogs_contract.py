"""The command logs contract, run on memory, SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

from corral.store import Store
from corral.store.commandlogs import MAX_OUTPUT, CommandLog


def _log(vm: str, at: float, **changes: object) -> CommandLog:
    values: dict[str, object] = {
        "vm": vm,
        "pool": "p",
        "command": "new",
        "argv": ("./spawn.sh", "--fast"),
        "exit_status": 1,
        "duration": 0.25,
        "stdout": "",
        "stderr": "quota exceeded\n",
        "at": at,
    }
    values.update(changes)
    return CommandLog(**values)  # type: ignore[arg-type]


async def test_records_per_vm_in_order_and_after_an_id(store: Store) -> None:
    logs = store.command_logs
    assert logs is not None
    first = await logs.add(_log("vm-1", 10.0))
    await logs.add(_log("vm-2", 11.0, stdout="10.0.0.2\n", exit_status=0))
    third = await logs.add(_log("vm-1", 12.0, command="delete", exit_status=None))
    assert first < third
    found = await logs.for_vm("vm-1")
    assert [(r.id, r.command, r.exit_status) for r in found] == [
        (first, "new", 1),
        (third, "delete", None),
    ]
    assert found[0].argv == ("./spawn.sh", "--fast") and found[0].stderr == "quota exceeded\n"
    assert found[0].duration == 0.25 and found[0].at == 10.0 and found[0].pool == "p"
    assert [r.id for r in await logs.for_vm("vm-1", after=first)] == [third]  # --follow
    assert [r.id for r in await logs.for_vm("vm-1", limit=1)] == [first]
    assert await logs.for_vm("vm-3") == []


async def test_output_is_capped_head_of_stdout_tail_of_stderr(store: Store) -> None:
    logs = store.command_logs
    assert logs is not None
    big_out = "A" * MAX_OUTPUT + "dropped"
    big_err = "dropped" + "E" * MAX_OUTPUT
    await logs.add(_log("vm-big", 1.0, stdout=big_out, stderr=big_err + "\x00"))
    (found,) = await logs.for_vm("vm-big")
    assert found.stdout == "A" * MAX_OUTPUT
    assert len(found.stderr) == MAX_OUTPUT and "dropped" not in found.stderr


async def test_purge_forgets_old_records_only(store: Store) -> None:
    logs = store.command_logs
    assert logs is not None
    await logs.add(_log("vm-1", 10.0))
    await logs.add(_log("vm-1", 20.0))
    assert await logs.purge(before=15.0) == 1
    assert [r.at for r in await logs.for_vm("vm-1")] == [20.0]
