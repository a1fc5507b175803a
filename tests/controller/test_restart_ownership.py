"""One serving process per SQLite store (issue 8 item 6): a second one exits at once, having
touched nothing — also when it could not have bound its port anyway."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral import exceptions
from corral.api.server import free_port
from corral.cli.output import Exit
from corral.config import parse_config
from corral.controller import Controller
from corral.store import ownership

from .conftest import counts, eventually

ROOT = Path(__file__).resolve().parents[2]


def test_a_claimed_store_refuses_a_second_claim_until_released(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    first = ownership.claim(db)
    with pytest.raises(exceptions.StoreInUse, match=f"pid {os.getpid()}"):
        ownership.claim(db)
    with pytest.raises(exceptions.StoreInUse):  # by another path to the same file, too
        ownership.claim(tmp_path / "." / "corral.db")
    (tmp_path / "link").symlink_to(tmp_path, target_is_directory=True)
    with pytest.raises(exceptions.StoreInUse):  # or through a symlink
        ownership.claim(tmp_path / "link" / "corral.db")
    first.release()
    first.release()  # idempotent
    ownership.claim(db).release()
    assert ownership.marker_of(db) == ownership.marker_of(tmp_path / "." / "corral.db")
    assert ownership.marker_of(db) != ownership.marker_of(tmp_path / "other.db")


def test_commands_do_not_inherit_the_lock(tmp_path: Path) -> None:
    # breakage caught: a lock descriptor inherited by a command (an orphaned `new` would keep
    # the store locked after its controller was killed, and the restart would be refused)
    db = tmp_path / "corral.db"
    claim = ownership.claim(db)
    child = subprocess.Popen(["sleep", "300"], close_fds=False)
    try:
        claim.release()
        ownership.claim(db).release()
    finally:
        child.kill()
        child.wait()


def test_a_missing_folder_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(exceptions.StoreError, match="lock file"):
        ownership.claim(tmp_path / "missing" / "corral.db")


def _config(db: Path, **api: Any) -> Any:
    pool = {"backend": {"type": "fake"}, "max": 5, "min_ready": 3, "poll_interval": 0.01}
    return parse_config({"store": f"sqlite:///{db}", "api": api, "pools": {"p": pool}}, env={})


async def test_a_second_controller_on_the_store_fails_before_touching_it(tmp_path: Path) -> None:
    # breakage caught: no ownership (the second controller's reconciliation, with its own empty
    # fake backend, marks the first one's live VMs failed) or ownership taken after recovery
    cfg = _config(tmp_path / "corral.db")
    first = await Controller.create(cfg, tick=0.05)
    try:
        await first.start()

        async def three_ready() -> bool:
            return (await counts(first)).get("ready") == 3

        await eventually(first, three_ready)
        with pytest.raises(exceptions.StoreInUse, match="in use by another corral process"):
            await Controller.create(cfg, tick=0.05)
        assert (await counts(first)) == {"ready": 3}
        secondary = await Controller.create(cfg, tick=0.05, recover=False)  # shares, recovers no
        await secondary.stop()
    finally:
        await first.stop()
    again = await Controller.create(cfg, tick=0.05)  # released by stop()
    await again.stop()


def _serve(cfg: Path, port: int, log: Path, *, pipe_stderr: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli",
                "serve",
                "--config",
                str(cfg),
                "--port",
                str(port),
            ],
            cwd=cfg.parent,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE if pipe_stderr else out,
        )


def _vm_states(url: str) -> list[str]:
    answer = httpx.get(f"{url}/v1/vms", timeout=10)
    answer.raise_for_status()
    return sorted(vm["state"] for vm in answer.json())


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_second_corral_serve_exits_with_one_line_and_changes_nothing(tmp_path: Path) -> None:
    cfg = tmp_path / "corral.yaml"
    cfg.write_text(
        "store: sqlite:///corral.db\n"
        "pools:\n"
        "  p: {backend: {type: fake}, max: 5, min_ready: 3, poll_interval: 0.01}\n"
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = _serve(cfg, port, tmp_path / "first.log", pipe_stderr=False)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert first.poll() is None, "the first corral serve exited"
            try:
                if _vm_states(url) == ["ready"] * 3:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the first server never had 3 ready VMs"
            time.sleep(0.05)
        # the same port (refused before the store is touched) and another port (the store lock
        # refuses it): without the lock the latter recovers and reconciles against the live one
        for second_port, code in ((port, "address_in_use"), (free_port(), "store_in_use")):
            second = _serve(cfg, second_port, tmp_path / "second.log", pipe_stderr=True)
            _, err = second.communicate(timeout=60)
            lines = [line for line in err.decode().splitlines() if not line.startswith("note: ")]
            assert second.returncode == Exit.UNAVAILABLE  # a port or store that cannot be had
            assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), lines
            assert _vm_states(url) == ["ready"] * 3  # none marked failed by the second process
        assert f"pid {first.pid}" in lines[0]
    finally:
        first.send_signal(signal.SIGTERM)
        try:
            first.wait(timeout=30)
        finally:
            if first.poll() is None:
                first.kill()
                first.wait()
