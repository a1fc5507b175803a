"""Ownership of a SQLite store: one serving process per database file, held for its whole life.

A second ``corral serve`` on the same SQLite file would recover the first one's tasks and reconcile
against its live machines (marking VMs failed that are alive). :func:`claim` takes an exclusive
``flock`` on a lock file beside the database (``<db>.lock``) BEFORE anything is recovered; a
second process gets :class:`corral.exceptions.StoreInUse` at once, naming the holder's pid. The
kernel drops the lock when the holder dies, ``kill -9`` included, so a restart never waits for a
stale lock and never needs a stale-lock heuristic. The descriptor is close-on-exec: the commands
a backend starts must not inherit it (an orphaned command would otherwise keep the store locked
after its controller died).

The claim also names the store for the commands started on its behalf (:attr:`StoreClaim.marker`),
so that the next owner can find what an earlier owner left running (``corral.backends.leftovers``).

PostgreSQL stores are shared by several processes on purpose (SPEC §8): nothing here applies to
them. This module must not open the database.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from pathlib import Path

from corral import exceptions

LOCK_SUFFIX = ".lock"
"""The lock file is the database's path with this suffix added."""


def lock_path(database: Path) -> Path:
    """The lock file of the SQLite database ``database``."""
    return database.with_name(database.name + LOCK_SUFFIX)


def marker_of(database: Path) -> str:
    """The name a store's commands carry (``CORRAL_OWNER``): a digest of the database's real
    path, the same in every process that opens that file by whatever path."""
    digest = hashlib.sha256(os.fsencode(os.path.realpath(database))).hexdigest()
    return f"sqlite-{digest[:24]}"


class StoreClaim:
    """The exclusive ownership of one SQLite store by this process, until :meth:`release`."""

    def __init__(self, database: Path, fd: int) -> None:
        """Prefer :func:`claim`."""
        self.database = database
        self.path = lock_path(Path(os.path.realpath(database)))
        self.marker = marker_of(database)
        """What the commands started for this store carry in ``CORRAL_OWNER``."""
        self._fd = fd

    @property
    def held(self) -> bool:
        """Whether this process still holds the store."""
        return self._fd >= 0

    def release(self) -> None:
        """Let another process own the store (idempotent). The lock file stays: removing it
        would let two processes lock two different files of the same name."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)  # closing the only descriptor of the open file drops the flock


def claim(database: Path | str) -> StoreClaim:
    """Take the SQLite store ``database`` for this process, or raise ``StoreInUse`` at once.

    A folder that does not exist is a ``StoreError`` (the store's URL is checked before this).
    """
    database = Path(database)
    # beside the real file: two paths to one database (a symlink) must meet on one lock
    path = lock_path(Path(os.path.realpath(database)))
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise exceptions.StoreError(f"cannot create the store's lock file {path}: {exc}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder(fd)
        os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise exceptions.StoreError(f"cannot lock the store's lock file {path}: {exc}") from exc
        who = f"pid {holder}" if holder else "another process"
        raise exceptions.StoreInUse(
            f"the store sqlite:///{database} is in use by another corral process ({who}, "
            f"lock {os.path.abspath(path)}): stop it first, or give this one another store"
        ) from None
    try:  # who holds it, for the message the next claimant prints
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError:
        pass  # a read-only or full disk: the lock itself is what matters
    return StoreClaim(database, fd)


def _holder(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
