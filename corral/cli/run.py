"""``corral acquire ... -- CMD``: run an operator's command while holding a VM.

The command gets the ticket's VM in its environment; the signals an operator sends to corral
reach it; its exit status becomes corral's. Holding, renewing and releasing the VM is the
client's ``acquire()`` (the caller's job); this module only runs the process.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import suppress
from types import FrameType

from corral import exceptions
from corral.cli import common
from corral.client import models

FORWARDED = (
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
"""Signals passed on to the command (SIGINT only when not typed at the terminal, which sends
it to the command itself)."""


def environment(ticket: models.Ticket, base: Mapping[str, str]) -> dict[str, str]:
    """``base`` plus what the command needs to reach its VM: ``CORRAL_TICKET``, ``CORRAL_VM``,
    ``CORRAL_ADDRESS``, ``CORRAL_OWNER``, ``CORRAL_POOL`` (a ticket by pool), ``CORRAL_VMS``
    and ``CORRAL_ADDRESSES`` (every VM of the ticket and its address, space-separated, in the
    same order; the first is ``CORRAL_VM``; an unknown address is ``-``), one
    ``CORRAL_META_<KEY>`` per metadata pair (the key upper-cased, other characters ``_``) and one
    ``CORRAL_CONNECTION_<KEY>`` per connection detail of the VM (``CORRAL_CONNECTION_USER``,
    ``CORRAL_CONNECTION_PORT``...)."""
    env = {
        k: v for k, v in base.items() if not k.startswith(("CORRAL_META_", "CORRAL_CONNECTION_"))
    }
    env.update(
        CORRAL_TICKET=ticket.id,
        CORRAL_VM=ticket.vm or "",
        CORRAL_ADDRESS=ticket.address or "",
        CORRAL_OWNER=ticket.owner,
    )
    held = common.with_addresses(ticket)
    if not held and ticket.vm:  # a server older than multi-machine tickets
        held = [(ticket.vm, ticket.address)]
    env["CORRAL_VMS"] = " ".join(name for name, _ in held)
    env["CORRAL_ADDRESSES"] = " ".join(address or "-" for _, address in held)
    if ticket.pool is not None:
        env["CORRAL_POOL"] = ticket.pool
    for key, value in ticket.meta.items():
        env["CORRAL_META_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())] = value
    for key, value in ticket.connection.items():
        env["CORRAL_CONNECTION_" + re.sub(r"[^A-Z0-9_]", "_", key.upper())] = value
    return env


def check_command(argv: Sequence[str]) -> None:
    """Refuse, before a VM is taken, a command that cannot be found (``InvalidInput``)."""
    program = argv[0]
    if not program:
        raise exceptions.InvalidInput("the command after '--' is empty")
    if shutil.which(program) is None:
        raise exceptions.InvalidInput(f"command {program!r}: not found or not executable")


def exit_status(returncode: int) -> int:
    """A child's status as a shell reports it: 128+N when signal N killed it."""
    return 128 - returncode if returncode < 0 else returncode


def _at_terminal() -> bool:
    """True when this process is in the terminal's foreground group: a Ctrl-C typed there
    reaches the command directly, so it is not sent a second time."""
    try:
        fd = sys.stdin.fileno()
        return os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError):
        return False


def run_command(argv: Sequence[str], env: Mapping[str, str]) -> int:
    """Run ``argv`` to its end, passing on :data:`FORWARDED` signals; its exit status."""
    try:
        child = subprocess.Popen(list(argv), env=dict(env))  # noqa: S603 (the operator's own)
    except OSError as exc:
        raise exceptions.InvalidInput(f"command {argv[0]!r}: {exc.strerror}") from exc

    def forward(signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGINT and _at_terminal():
            return
        with suppress(ProcessLookupError):
            child.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        return exit_status(child.wait())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
