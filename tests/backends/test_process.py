"""The command runner under the script backend: both implementations (pidfd and asyncio) behave
the same: exit status, bounded captures, group kill on timeout and cancellation, no fd left."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import pytest

from corral.backends import process

from .conftest import wait_for

Runner = Callable[..., Awaitable[int]]

RUNNERS = [
    pytest.param(process._run_asyncio, id="asyncio"),
    pytest.param(
        process._run_pidfd,
        id="pidfd",
        marks=pytest.mark.skipif(not process.pidfd_supported(), reason="no pidfd here"),
    ),
]

HANGS = """
sleep 30 &
echo $! > "$1/child.pid"
echo $$ > "$1/parent.pid"
echo 'still booting' >&2
sleep 30
"""


def _open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie waiting for its (foreign) parent counts as dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def _run(
    runner: Runner, argv: Sequence[str], folder: Path, timeout: float = 10.0
) -> tuple[int, process.Capture, process.Capture]:
    out, err = process.Capture(keep_tail=False), process.Capture(keep_tail=True)
    env = {**os.environ, "GREETING": "hello"}
    code = await runner(argv, cwd=folder, env=env, timeout=timeout, out=out, err=err)
    return code, out, err


@pytest.mark.parametrize("runner", RUNNERS)
async def test_status_output_environment_and_workdir(runner: Runner, tmp_path: Path) -> None:
    body = 'echo "$GREETING $(pwd)"; echo oops >&2; exit 3'
    code, out, err = await _run(runner, ["sh", "-c", body], tmp_path)
    assert code == 3
    assert out.text() == f"hello {tmp_path}\n"
    assert err.text() == "oops\n"


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_signal_is_a_negative_status(runner: Runner, tmp_path: Path) -> None:
    code, _, _ = await _run(runner, ["sh", "-c", "kill -TERM $$"], tmp_path)
    assert code == -15


@pytest.mark.parametrize("runner", RUNNERS)
async def test_captures_keep_stdout_head_and_stderr_tail(runner: Runner, tmp_path: Path) -> None:
    big = process.CAPTURE_LIMIT * 3
    body = (
        f"head -c {big} /dev/zero | tr '\\0' a; printf END; head -c {big} /dev/zero >&2; echo Z >&2"
    )
    code, out, err = await _run(runner, ["sh", "-c", body], tmp_path)
    assert code == 0
    assert out.total == big + 3 and len(out.data) == process.CAPTURE_LIMIT
    assert set(out.text()) == {"a"}
    assert err.total == big + 2 and len(err.data) == process.CAPTURE_LIMIT
    assert err.text().endswith("\0Z\n")


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_missing_program_is_an_os_error(runner: Runner, tmp_path: Path) -> None:
    before = _open_fds()
    with pytest.raises(OSError):
        await _run(runner, [str(tmp_path / "nowhere")], tmp_path)
    assert _open_fds() <= before


@pytest.mark.parametrize("runner", RUNNERS)
async def test_timeout_kills_the_group_and_keeps_what_was_read(
    runner: Runner, tmp_path: Path
) -> None:
    before = _open_fds()
    out, err = process.Capture(keep_tail=False), process.Capture(keep_tail=True)
    with pytest.raises(TimeoutError):
        await runner(
            ["sh", "-c", HANGS, "hangs", str(tmp_path)],
            cwd=tmp_path,
            env=dict(os.environ),
            timeout=0.3,
            out=out,
            err=err,
        )
    assert err.text() == "still booting\n"
    pids = [int((tmp_path / f"{who}.pid").read_text()) for who in ("parent", "child")]
    await wait_for(lambda: all(_dead(pid) for pid in pids), what="command and its child killed")
    assert _open_fds() <= before


@pytest.mark.parametrize("runner", RUNNERS)
async def test_cancellation_kills_the_group(runner: Runner, tmp_path: Path) -> None:
    before = _open_fds()
    job = asyncio.create_task(_run(runner, ["sh", "-c", HANGS, "hangs", str(tmp_path)], tmp_path))
    parent = tmp_path / "parent.pid"
    await wait_for(lambda: parent.exists() and parent.read_text().endswith("\n"), what="started")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    pids = [int((tmp_path / f"{who}.pid").read_text()) for who in ("parent", "child")]
    await wait_for(lambda: all(_dead(pid) for pid in pids), what="command and its child killed")
    assert _open_fds() <= before


async def test_the_default_runner_leaves_asyncio_child_watching_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    before = _open_fds()
    with caplog.at_level(logging.DEBUG, logger="asyncio"):
        runs = await asyncio.gather(
            *(_run(process.run_command, ["sh", "-c", "echo ok"], tmp_path) for _ in range(50))
        )
    assert all(code == 0 and out.text() == "ok\n" for code, out, _ in runs)
    assert not [r for r in caplog.records if "child process" in r.getMessage()]
    assert _open_fds() <= before


@pytest.mark.skipif(not process.pidfd_supported(), reason="no pidfd here")
async def test_a_second_cancellation_still_kills_and_reaps(tmp_path: Path) -> None:
    # (the asyncio fallback, like asyncio itself, leaves an unclosed pipe transport then)
    runner = process._run_pidfd
    job = asyncio.create_task(_run(runner, ["sh", "-c", HANGS, "hangs", str(tmp_path)], tmp_path))
    parent = tmp_path / "parent.pid"
    await wait_for(lambda: parent.exists() and parent.read_text().endswith("\n"), what="started")
    job.cancel()
    await asyncio.sleep(0)  # the kill has begun
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    pid = int(parent.read_text())
    # reaped, not a zombie: its /proc entry disappears
    await wait_for(lambda: not Path(f"/proc/{pid}").exists(), what="command reaped")


@pytest.mark.parametrize("runner", RUNNERS)
async def test_a_command_that_closes_its_pipes_is_waited_for(
    runner: Runner, tmp_path: Path
) -> None:
    body = "echo early; exec >&- 2>&-; sleep 0.3; exit 4"
    code, out, _ = await _run(runner, ["sh", "-c", body], tmp_path)
    assert code == 4 and out.text() == "early\n"


@pytest.mark.skipif(not process.pidfd_supported(), reason="no pidfd here")
async def test_a_start_cancelled_midway_leaves_no_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = threading.Event(), threading.Event()
    made: list[subprocess.Popen[bytes]] = []
    real = process._popen

    def slow_popen(
        argv: Sequence[str], cwd: Path, env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        entered.set()
        gate.wait(5)
        proc = real(argv, cwd, env)
        made.append(proc)
        return proc

    monkeypatch.setattr(process, "_popen", slow_popen)
    job = asyncio.create_task(_run(process._run_pidfd, ["sleep", "30"], tmp_path))
    await wait_for(entered.is_set, what="start under way")
    job.cancel()
    await asyncio.sleep(0.05)
    assert not job.done()  # the cancellation waits for the start under way...
    job.cancel()  # ...however often it is repeated
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await job
    # ...and propagates only once the process is killed and reaped: a caller that goes on
    # (to delete what the command was creating) never races it
    assert len(made) == 1 and made[0].returncode == -9


@pytest.mark.skipif(not process.pidfd_supported(), reason="no pidfd here")
async def test_a_start_cancelled_before_its_thread_took_it_never_happens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    calls: list[Sequence[str]] = []
    real = process._popen

    def gated_popen(
        argv: Sequence[str], cwd: Path, env: Mapping[str, str]
    ) -> subprocess.Popen[bytes]:
        calls.append(argv)
        gate.wait(5)
        return real(argv, cwd, env)

    monkeypatch.setattr(process, "_popen", gated_popen)
    # every starter thread is busy with a start, so the next one waits in the queue
    busy = [
        asyncio.create_task(_run(process._run_pidfd, ["true"], tmp_path))
        for _ in range(process.STARTER_THREADS)
    ]
    await wait_for(lambda: len(calls) == process.STARTER_THREADS, what="starters busy")
    queued = asyncio.create_task(_run(process._run_pidfd, ["never-run"], tmp_path))
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued  # at once: nothing was started
    gate.set()
    assert [code for code, _, _ in await asyncio.gather(*busy)] == [0] * process.STARTER_THREADS
    assert ["never-run"] not in calls
