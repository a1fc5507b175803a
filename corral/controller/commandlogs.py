"""From backend commands to the store's command logs: :class:`CommandLogWriter`.

Backends that run commands (the script backend's ``on_output`` hook) hand each command's output to
:meth:`CommandLogWriter.offer`, which never blocks: records wait in a bounded queue and one
background task writes them to ``store.command_logs``. When the queue is full a record is dropped
and counted (a backend must never wait for the store to keep its logs). This module must not run
commands or decide anything about VMs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from functools import partial

from corral import exceptions
from corral.backends.script import CommandOutput
from corral.store.commandlogs import CommandLog, CommandLogsRepository

log = logging.getLogger(__name__)

QUEUE = 10_000
"""Records waiting to be written at most."""


class CommandLogWriter:
    """Writes the command outputs backends report to a command logs repository."""

    def __init__(
        self,
        repository: CommandLogsRepository,
        *,
        clock: Callable[[], float] = time.time,
        maxsize: int = QUEUE,
    ) -> None:
        self._repository = repository
        self._clock = clock
        self._queue: asyncio.Queue[CommandLog] = asyncio.Queue(maxsize=maxsize)
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0
        """Records lost because the queue was full."""

    def attach(self, backends: Mapping[str, object]) -> int:
        """Hook every backend of ``backends`` (pool -> backend, or a guard with ``.backend``)
        that reports its commands; how many were hooked."""
        hooked = 0
        for pool, backend in backends.items():
            inner = getattr(backend, "backend", backend)
            if hasattr(inner, "on_output"):
                inner.on_output = partial(self.offer, pool)
                hooked += 1
        return hooked

    def offer(self, pool: str, output: CommandOutput) -> None:
        """Queue one command's output (never blocks; dropped and counted when full)."""
        record = CommandLog(
            vm=output.vm,
            pool=pool,
            command=output.command,
            argv=output.argv,
            exit_status=output.exit_status,
            duration=output.duration,
            stdout=output.stdout,
            stderr=output.stderr,
            at=self._clock(),
        ).capped()
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._write())

    async def _write(self) -> None:
        while not self._queue.empty():
            record = self._queue.get_nowait()
            try:
                await self._repository.add(record)
            except exceptions.CorralError as exc:
                log.warning("command log of VM %s not kept: %s", record.vm, exc)

    async def flush(self) -> None:
        """Wait until every queued record is written."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        """Write what is queued, then stop."""
        with contextlib.suppress(asyncio.CancelledError):
            await self.flush()
