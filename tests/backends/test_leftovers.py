"""Finding and killing the commands an earlier owner of a store left running (issue 8 item 5)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corral.backends import leftovers

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/environ").exists(), reason="needs /proc (Linux)"
)

# a leader that starts a child in a new session (it leaves the group, keeps the marker) and waits
ESCAPING = "setsid sleep 300 & sleep 300"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the shell's children too
        except ProcessLookupError:
            pass
        proc.wait()


def _start(procs: list[subprocess.Popen[bytes]], marker: str | None, command: str) -> int:
    env = {k: v for k, v in os.environ.items() if k != leftovers.OWNER_VARIABLE}
    if marker is not None:
        env[leftovers.OWNER_VARIABLE] = marker
    proc = subprocess.Popen(["sh", "-c", command], env=env, start_new_session=True)
    procs.append(proc)
    return proc.pid


def _wait_found(marker: str, count: int) -> list[int]:
    for _ in range(500):
        found = leftovers.find(marker)
        if len(found) >= count:
            return found
        time.sleep(0.01)
    raise AssertionError(f"{count} processes with marker {marker} never showed up")


def _group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def test_kill_ends_every_marked_process_and_nothing_else(
    started: list[subprocess.Popen[bytes]],
) -> None:
    # breakage caught: killing the command's own process group only (the escaped child lives
    # on), matching a marker by prefix (m1 would kill m10's commands), killing unmarked ones
    leader = _start(started, "m1", ESCAPING)
    other = _start(started, "m10", "sleep 300")
    unmarked = _start(started, None, "sleep 300")
    found = _wait_found("m1", 2)  # the leader (and its sleep, unless sh execs it), the escaped one
    for _ in range(500):  # the escaped child must exist, in a group of its own
        if any(_group(pid) not in (leader, None) for pid in found):
            break
        time.sleep(0.01)
        found = leftovers.find("m1")
    else:
        raise AssertionError("the escaping child never showed up")
    assert leader in found and other not in found and unmarked not in found
    killed = leftovers.kill_now("m1", deadline=20)
    assert set(found) <= set(killed)
    assert leftovers.find("m1") == []
    assert started[0].wait(timeout=20) < 0  # the leader died of a signal
    assert started[1].poll() is None and started[2].poll() is None
    assert other in leftovers.find("m10")


def test_kill_finds_nothing_without_a_marked_process() -> None:
    assert leftovers.kill_now(f"nobody-{os.getpid()}", deadline=1) == []


def test_find_reads_a_fake_proc(tmp_path: Path) -> None:
    # exact "CORRAL_OWNER=<marker>" entries only; never this process (a controller started from
    # a marked environment must not kill itself); zombies (empty environ) are not listed
    for pid, environ in ((101, b"A=1\0CORRAL_OWNER=m\0"), (102, b"CORRAL_OWNER=mm\0"), (103, b"")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "environ").write_bytes(environ)
    (tmp_path / str(os.getpid())).mkdir()
    (tmp_path / str(os.getpid()) / "environ").write_bytes(b"CORRAL_OWNER=m\0")
    (tmp_path / "self").mkdir()
    assert leftovers.find("m", proc=tmp_path) == [101]
    assert leftovers.find("m", proc=tmp_path / "missing") == []


def test_run_in_a_subprocess_is_found_by_the_interpreter_too(
    started: list[subprocess.Popen[bytes]],
) -> None:
    # a marked Python child (not only sh): found through its environment, whatever it runs
    env = {**os.environ, leftovers.OWNER_VARIABLE: "py-marker"}
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(300)"], env=env, start_new_session=True
    )
    started.append(proc)
    assert _wait_found("py-marker", 1) == [proc.pid]
    leftovers.kill_now("py-marker", deadline=20)
    assert proc.wait(timeout=20) < 0
