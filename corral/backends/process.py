"""Running one command for a backend: no shell, its own process group, bounded output, a timeout.

:func:`run_command` starts ``argv`` in a new session (so its whole process group can be killed),
reads stdout and stderr to their end keeping a bounded part of each (:class:`Capture`), and
returns the exit status; on timeout or cancellation it kills the group with ``SIGKILL``, lets the
pipes close and reaps the process before the exception propagates. Nothing is left running and
no file descriptor stays open, whatever happens.

On Linux with ``pidfd_open`` (5.3+) the process is started by :class:`subprocess.Popen` (the
``vfork`` path: no ``preexec_fn``) in one of a few starter threads — ``Popen`` returns only once
the child has exec'd, milliseconds on a busy host that would otherwise stall the event loop — and
then watched by the event loop itself: its pipes (and, if it outlives them or must be killed, a
pidfd) are registered with ``loop.add_reader``, so there is no watcher thread per child and no
stream transport, and the process is reaped by its own ``Popen`` object: asyncio's child watcher
never hears of it (no "Unknown child process pid" warnings). Elsewhere it falls back to
:func:`asyncio.create_subprocess_exec`. This module must not interpret the command's output nor
ever pass a command through a shell.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

CAPTURE_LIMIT = 64 * 1024
"""Bytes of each output stream kept (stdout's head, stderr's tail); the rest is read and dropped."""
KILL_GRACE = 2.0
"""Seconds to wait for the pipes to close after the process group was killed."""
READ_SIZE = 65536


class Capture:
    """Collects a stream, keeping at most :data:`CAPTURE_LIMIT` bytes (its head or its tail)."""

    def __init__(self, *, keep_tail: bool) -> None:
        """``keep_tail``: keep the last bytes (stderr) rather than the first (stdout)."""
        self.keep_tail = keep_tail
        self.data = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        """Add what was read."""
        self.total += len(chunk)
        if self.keep_tail:
            self.data += chunk
            del self.data[:-CAPTURE_LIMIT]
        elif len(self.data) < CAPTURE_LIMIT:
            self.data += chunk[: CAPTURE_LIMIT - len(self.data)]

    async def drain(self, stream: asyncio.StreamReader | None) -> None:
        """Read ``stream`` to its end (the asyncio fallback)."""
        if stream is None:
            return
        while chunk := await stream.read(16384):
            self.feed(chunk)

    def text(self) -> str:
        """What was kept, decoded (invalid UTF-8 replaced)."""
        return self.data.decode("utf-8", errors="replace")


@functools.cache
def pidfd_supported() -> bool:
    """Whether this system can watch a child with a pidfd (Linux 5.3+, Python 3.9+)."""
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open"):
        return False
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError:  # ENOSYS on an old kernel, EPERM under some seccomp profiles
        return False
    os.close(fd)
    return True


async def run_command(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    out: Capture,
    err: Capture,
) -> int:
    """Run ``argv`` to its end and return its exit status (``-N``: killed by signal ``N``).

    Raises ``OSError`` when it cannot start, and ``TimeoutError`` after ``timeout`` seconds; on
    that, as on cancellation, the process group was killed and the process reaped first.
    ``out`` and ``err`` hold what the command printed, also after a timeout.
    """
    if pidfd_supported():
        return await _run_pidfd(argv, cwd=cwd, env=env, timeout=timeout, out=out, err=err)
    return await _run_asyncio(argv, cwd=cwd, env=env, timeout=timeout, out=out, err=err)


def _killpg(pid: int) -> None:
    try:  # even if the leader exited: its children may still hold the pipes
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # the whole group is gone already


# --- Linux: Popen + pidfd + loop readers ---------------------------------------------------------


def _fileno(stream: IO[bytes] | None) -> int:
    if stream is None:
        raise OSError("the child's pipe was not created")
    return stream.fileno()


class _Child:
    """One started process watched by the event loop: its two pipes, then (if needed) a pidfd.

    A command usually exits as its pipes close, so the pidfd is only opened when the process
    is still there once both pipes are closed, or when it must be killed.
    """

    def __init__(self, proc: subprocess.Popen[bytes], out: Capture, err: Capture) -> None:
        self.loop = asyncio.get_running_loop()
        self.proc = proc
        self._fds: dict[int, tuple[asyncio.Future[None], Capture | None]] = {}
        self._pidfd = -1
        self._exited: asyncio.Future[None] | None = None
        try:
            self.pipes = (
                self._watch(_fileno(proc.stdout), out),
                self._watch(_fileno(proc.stderr), err),
            )
        except BaseException:
            self.close()
            raise

    def _watch(self, fd: int, capture: Capture | None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = self.loop.create_future()
        if capture is not None:
            os.set_blocking(fd, False)
        self._fds[fd] = (done, capture)
        self.loop.add_reader(fd, self._readable, fd)
        return done

    def _readable(self, fd: int) -> None:
        done, capture = self._fds[fd]
        if capture is not None:
            try:
                chunk = os.read(fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                chunk = b""
            if chunk:
                capture.feed(chunk)
                return
        self.loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    def _exit(self) -> asyncio.Future[None]:
        """A future set once the process has exited (a pidfd watched by the loop)."""
        if self._exited is None:
            self._pidfd = os.pidfd_open(self.proc.pid)
            self._exited = self._watch(self._pidfd, None)
        return self._exited

    async def finish(self) -> int:
        """Wait for both pipes to close and the process to exit; its exit status."""
        await asyncio.wait(self.pipes)  # a cancelled wait() leaves the watches be
        code = self.proc.poll()
        if code is None:  # it closed its pipes but has not exited (yet)
            await asyncio.wait([self._exit()])
            code = self.proc.wait()  # it has exited: this only reaps it
        return code

    async def kill(self) -> None:
        """Kill the process group, let the pipes close (briefly), and reap the process."""
        _killpg(self.proc.pid)
        pending = [p for p in self.pipes if not p.done()]
        if pending:  # a grandchild that escaped the group may still hold a pipe: give up then
            await asyncio.wait(pending, timeout=KILL_GRACE)
        if self.proc.poll() is None:
            await asyncio.shield(self._exit())  # a second cancel must not cancel the watch
            self.proc.wait()

    def close(self) -> None:
        """Stop watching the pipes and close them; the pidfd once the process is reaped.

        A kill interrupted by a second cancellation leaves a dying process: it is reaped when
        its pidfd fires, so that no zombie and no unwaited ``Popen`` stay behind.
        """
        for fd, (done, _) in self._fds.items():
            self.loop.remove_reader(fd)
            if not done.done():
                done.cancel()
        self._fds.clear()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        pidfd, self._pidfd = self._pidfd, -1
        if self.proc.poll() is None:
            try:
                pidfd = pidfd if pidfd >= 0 else os.pidfd_open(self.proc.pid)
            except OSError:  # out of fds: the Popen object reaps it when collected
                return
            self.loop.add_reader(pidfd, self._reap_later, pidfd)
        elif pidfd >= 0:
            os.close(pidfd)

    def _reap_later(self, pidfd: int) -> None:
        self.loop.remove_reader(pidfd)
        os.close(pidfd)
        self.proc.poll()


@functools.cache
def _devnull() -> int:
    """One read-only /dev/null descriptor shared by every command's stdin (opened once)."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


STARTER_THREADS = 4
"""Threads that start processes (``Popen`` blocks until the child has called ``exec``)."""


@functools.cache
def _starter() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(
        STARTER_THREADS, thread_name_prefix="corral-process-start"
    )


def _popen(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - an argv list, never a shell
        list(argv),
        stdin=_devnull(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=cwd,
        env=env,
        start_new_session=True,  # its own process group, killed as a whole
    )


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill a process nobody waits for any more, reap it and close its pipes (blocking)."""
    _killpg(proc.pid)
    proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


async def _uninterrupted(work: asyncio.Future[None]) -> None:
    """Wait for ``work`` to end, however often the caller is cancelled meanwhile."""
    while not work.done():
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            continue  # our caller re-raises its cancellation once the work is done


async def _discard_started(started: concurrent.futures.Future[subprocess.Popen[bytes]]) -> None:
    """Once a start under way has made its process, kill its group and reap it (off the loop)."""
    try:
        proc = await asyncio.wrap_future(started)
    except Exception:  # it failed to start: nothing to discard
        return
    await asyncio.get_running_loop().run_in_executor(_starter(), _discard, proc)


async def _start(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
    """``Popen`` in a starter thread: while the child execs, the event loop runs on (a start
    takes milliseconds on a busy host, and blocking the loop for it stalls every ticket).

    Cancelled before a thread took it, the start never happens; cancelled while ``Popen`` runs,
    it waits for the process, kills its group and reaps it before the cancellation propagates:
    a caller that goes on (say, to delete what the command was creating) must never race a
    command it gave up on.
    """
    started = _starter().submit(_popen, argv, cwd, env)
    try:
        return await asyncio.shield(asyncio.wrap_future(started))
    except asyncio.CancelledError:
        if not started.cancel():  # under way: Popen returns once the child has exec'd
            await _uninterrupted(asyncio.ensure_future(_discard_started(started)))
        raise


async def _run_pidfd(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    out: Capture,
    err: Capture,
) -> int:
    proc = await _start(argv, cwd, env)
    try:
        child = _Child(proc, out, err)
    except BaseException:
        _discard(proc)
        raise
    try:
        async with asyncio.timeout(timeout):
            return await child.finish()
    except BaseException:
        await child.kill()
        raise
    finally:
        child.close()


# --- elsewhere: asyncio subprocesses ----------------------------------------------------------


async def _run_asyncio(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    timeout: float,
    out: Capture,
    err: Capture,
) -> int:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env),
        start_new_session=True,
    )
    readers = {
        asyncio.create_task(out.drain(proc.stdout)),
        asyncio.create_task(err.drain(proc.stderr)),
    }
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait(readers)  # cancelling wait() leaves the readers running
            return await proc.wait()
    except BaseException:
        _killpg(proc.pid)
        _, pending = await asyncio.wait(readers, timeout=KILL_GRACE)
        for task in pending:  # a grandchild escaped the group and still holds a pipe
            task.cancel()
        await proc.wait()
        raise
