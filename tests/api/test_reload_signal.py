"""Configuration reload of a real ``corral serve`` process: SIGHUP and ``corral config reload``
(issue 12).

What it catches: SIGHUP not handled (the default action kills the server) or not re-reading
the file; an invalid file applied in part or taking the server down instead of being refused
with its problems while the running configuration stays; a removed pool never disappearing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apitools import ADMIN_TOKEN, auth
from typer.testing import CliRunner

from corral.api.server import free_port
from corral.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
ADMIN = auth(ADMIN_TOKEN)
POOL = {"backend": {"type": "fake"}, "max": 2, "max_starting": 1, "min_ready": 1}


def _until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        time.sleep(0.05)


def _config(tmp: Path, pools: dict[str, Any]) -> dict[str, Any]:
    return {
        "store": f"sqlite:///{tmp / 'corral.db'}",
        "api": {"tokens": {ADMIN_TOKEN: {"owner": "root", "role": "admin"}}},
        "pools": pools,
    }


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    path = tmp_path / "corral.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, {"base": POOL})))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli",
                "serve",
                "--config",
                str(path),
                "--port",
                str(port),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def healthy() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited: {log.read_text()}")
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    _until(healthy, "the server is ready (/readyz)")
    try:
        yield proc, url, path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)


def _pools(url: str) -> dict[str, dict[str, Any]]:
    response = httpx.get(f"{url}/v1/pools", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text  # never an error while a pool drains
    return {p["name"]: p for p in response.json()}


@pytest.mark.slow
def test_sighup_and_config_reload(served: tuple[subprocess.Popen[bytes], str, Path]) -> None:
    proc, url, path = served
    tmp = path.parent
    path.write_text(yaml.safe_dump(_config(tmp, {"base": POOL, "extra": POOL})))
    proc.send_signal(signal.SIGHUP)
    _until(lambda: _pools(url).get("extra", {}).get("vms", {}).get("ready") == 1, "extra ready")
    assert proc.poll() is None

    # an invalid file is refused with its problem; nothing changes; the server stays up
    path.write_text(yaml.safe_dump(_config(tmp, {"base": {**POOL, "max": "5"}})))
    refused = httpx.post(f"{url}/v1/config/reload", headers=ADMIN, timeout=30)
    assert refused.status_code == 422
    assert "pools.base.max" in refused.json()["error"]["message"]
    proc.send_signal(signal.SIGHUP)
    assert set(_pools(url)) == {"base", "extra"} and proc.poll() is None

    # a removed pool drains and disappears once empty
    path.write_text(yaml.safe_dump(_config(tmp, {"base": {**POOL, "description": "kept"}})))
    env = {"CORRAL_URL": url, "CORRAL_TOKEN": ADMIN_TOKEN}
    result = CliRunner().invoke(app, ["config", "reload"], env=env)
    assert result.exit_code == 0, result.output
    assert "changed base" in result.stdout and "removed (draining) extra" in result.stdout
    _until(lambda: set(_pools(url)) == {"base"}, "extra gone")
    assert _pools(url)["base"]["description"] == "kept"
