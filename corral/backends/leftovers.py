"""Finding and killing the commands an earlier controller of the same store left running.

A ``script`` command runs in its own process group, so a controller killed with ``kill -9`` leaves
its ``new`` running. Recovery then undoes the interrupted spawn (``delete``) before that ``new``
has created the VM, and the VM appears afterwards, untracked: a leak that nothing removes when the
backend cannot list. So before recovery undoes anything, the new owner of the store kills every
process that the previous owners started, and waits until they are gone.

How they are found: every command carries the store's marker in its environment
(``CORRAL_OWNER=<marker>``, set by the script backend; the marker comes from
``corral.store.ownership``), and a process's initial environment is readable, while it lives,
in ``/proc/<pid>/environ``. This was chosen over a journal of (process group, start time) written
before each command waits:

- no race: the marker is in place from ``exec`` on, whereas a process started just before a kill
  could miss its journal entry;
- children inherit it, also those that left the process group (a daemonising ``new``);
- pid reuse cannot fool it: a recycled pid does not carry the marker;
- nothing is written per command (the spawn path stays one ``Popen``).

Its limits (docs/backends.md): Linux only (``/proc``; elsewhere nothing is found, with a debug
line); a command that empties its environment (``env -i``) or runs as another user (``sudo``
resets the environment and its processes cannot be read or killed by us) is not found. Only the
owner of a store (the holder of its lock) may call :func:`kill`: it kills whatever carries the
marker. This module must not start processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path
from typing import Protocol, runtime_checkable

OWNER_VARIABLE = "CORRAL_OWNER"
"""The environment variable naming the store a command was started for."""

KILL_DEADLINE = 30.0
"""Seconds to wait for killed processes to be gone before carrying on with an error logged."""

PROC = Path("/proc")

log = logging.getLogger(__name__)


def find(marker: str, *, proc: Path = PROC) -> list[int]:
    """The live processes (not this one) whose environment has ``CORRAL_OWNER=<marker>``.

    Exited processes not yet reaped (zombies) have an empty environment: they are not listed.
    """
    needle = f"{OWNER_VARIABLE}={marker}".encode()
    me = os.getpid()
    found: list[int] = []
    try:
        entries = list(proc.iterdir())
    except OSError:
        log.debug("no %s: commands of earlier controllers cannot be found", proc)
        return found
    for entry in entries:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return sorted(found)


def _kill(pid: int) -> None:
    try:
        if os.getpgid(pid) == pid:  # a command's own group: its children without the marker too
            os.killpg(pid, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # gone meanwhile, or not ours to kill (then it cannot be ours to wait for either)


def kill_now(marker: str, *, deadline: float = KILL_DEADLINE, proc: Path = PROC) -> list[int]:
    """SIGKILL every process :func:`find` lists (their process groups too) and wait until none is
    left, re-scanning so that a child forked meanwhile is caught too. Blocking; returns the pids
    killed. After ``deadline`` seconds (a process stuck in the kernel) logs an error and returns.
    """
    killed: list[int] = []
    end = time.monotonic() + deadline
    while pids := find(marker, proc=proc):
        for pid in pids:
            if pid not in killed:
                killed.append(pid)
            _kill(pid)
        if time.monotonic() > end:
            log.error(
                "commands of an earlier controller of this store survive SIGKILL after %g s "
                "(pids %s); going on: a VM they create later may leak",
                deadline,
                ", ".join(map(str, pids)),
            )
            break
        time.sleep(0.01)
    return killed


async def kill(marker: str, *, deadline: float = KILL_DEADLINE) -> list[int]:
    """:func:`kill_now` in a thread (the scan reads one file per process)."""
    killed = await asyncio.to_thread(kill_now, marker, deadline=deadline)
    if killed:
        log.warning(
            "killed %d commands left running by an earlier controller of this store (pids %s) "
            "before recovering its work",
            len(killed),
            ", ".join(map(str, killed)),
        )
    return killed


@runtime_checkable
class MarksCommands(Protocol):
    """A backend that starts commands and can mark them with the store's marker."""

    def mark(self, owner: str) -> None:
        """Start every later command with ``CORRAL_OWNER=<owner>``."""
        ...
