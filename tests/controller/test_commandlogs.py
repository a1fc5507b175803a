"""The command log writer: backends hooked, records written, a full queue drops (never blocks)."""

from __future__ import annotations

from corral.backends.script import CommandOutput
from corral.controller.commandlogs import CommandLogWriter
from corral.store.memory.commandlogs import MemoryCommandLogsRepository


class _Reporting:
    on_output = None


class _Guard:
    def __init__(self, backend: object) -> None:
        self.backend = backend


def _output(vm: str) -> CommandOutput:
    return CommandOutput("new", vm, ("./new",), 0, 0.1, "10.0.0.1\n", "")


async def test_hooked_backends_reports_are_written() -> None:
    repo = MemoryCommandLogsRepository()
    writer = CommandLogWriter(repo, clock=lambda: 5.0)
    reporting, silent = _Reporting(), object()
    assert writer.attach({"a": _Guard(reporting), "b": _Guard(silent)}) == 1
    assert reporting.on_output is not None
    reporting.on_output(_output("vm-1"))
    await writer.flush()
    (record,) = await repo.for_vm("vm-1")
    assert (record.pool, record.stdout, record.at) == ("a", "10.0.0.1\n", 5.0)


async def test_a_full_queue_drops_and_counts() -> None:
    repo = MemoryCommandLogsRepository()
    writer = CommandLogWriter(repo, maxsize=2)
    for n in range(5):  # no await in between: the writer task has not run yet
        writer.offer("p", _output(f"vm-{n}"))
    await writer.close()
    assert writer.dropped == 3
    assert [len(await repo.for_vm(f"vm-{n}")) for n in range(5)] == [1, 1, 0, 0, 0]
