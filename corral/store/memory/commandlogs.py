"""In-memory command logs (see :mod:`corral.store.commandlogs`). Must not do I/O."""

from __future__ import annotations

from dataclasses import replace

from corral.store.commandlogs import MAX_LIST, CommandLog


class MemoryCommandLogsRepository:
    """Records in a list; nothing survives the process."""

    def __init__(self) -> None:
        self._logs: list[CommandLog] = []
        self._next = 1

    async def add(self, log: CommandLog) -> int:
        """Keep ``log`` (capped); its new id."""
        kept = replace(log.capped(), id=self._next)
        self._next += 1
        self._logs.append(kept)
        return kept.id

    async def for_vm(self, vm: str, *, after: int = 0, limit: int = 100) -> list[CommandLog]:
        """The records of ``vm`` after ``after``, oldest first."""
        limit = max(0, min(limit, MAX_LIST))
        return [log for log in self._logs if log.vm == vm and log.id > after][:limit]

    async def purge(self, before: float) -> int:
        """Forget the records made before ``before``."""
        kept = [log for log in self._logs if log.at >= before]
        gone = len(self._logs) - len(kept)
        self._logs = kept
        return gone
