"""The command logs repository contract: what each backend command printed, per VM.

Every command a backend runs for a VM (the script backend's ``new``, ``delete``, ``livecheck``,
``release``) leaves one record: the argv, exit status (``None`` when it was killed on its
timeout), duration, and the captured stdout and stderr, each capped at :data:`MAX_OUTPUT`
characters (the first of stdout, where the address is; the last of stderr, where the error is).
Records are pruned with the store's history (:meth:`CommandLogsRepository.purge`).

Implementations: :mod:`corral.store.memory.commandlogs`, :mod:`corral.store.sql.commandlogs`; one
contract suite (``tests/store/test_commandlogs_contract.py``) runs against all of them. This
module must not know about SQL, HTTP or processes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

MAX_OUTPUT = 16 * 1024
"""Characters of stdout and of stderr kept per command."""

MAX_LIST = 1000
"""Records one call returns at most."""


@dataclass(frozen=True, slots=True)
class CommandLog:
    """One command's run for one VM. ``id`` increases with every record (0 before it is added)."""

    vm: str
    pool: str
    command: str
    argv: tuple[str, ...]
    exit_status: int | None
    duration: float
    stdout: str
    stderr: str
    at: float
    id: int = 0

    def capped(self) -> CommandLog:
        """The record with stdout's head and stderr's tail cut to :data:`MAX_OUTPUT`."""
        return replace(
            self,
            stdout=self.stdout[:MAX_OUTPUT],
            stderr=self.stderr[-MAX_OUTPUT:],
        )


class CommandLogsRepository(Protocol):
    """Command logs by VM, oldest first."""

    async def add(self, log: CommandLog) -> int:
        """Keep ``log`` (capped); its new id."""

    async def for_vm(self, vm: str, *, after: int = 0, limit: int = 100) -> list[CommandLog]:
        """The records of ``vm`` with an id above ``after``, oldest first, at most ``limit``
        (at most :data:`MAX_LIST`)."""

    async def purge(self, before: float) -> int:
        """Forget the records made before ``before``; how many were forgotten."""
