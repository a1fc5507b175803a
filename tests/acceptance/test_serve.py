"""Acceptance: the real ``corral serve`` in a subprocess, driven by the real ``corral`` command.

Also SIGTERM in the middle of a spawn storm, then a restart on the same SQLite store: nothing
leaks (the fake backend's inventory, kept in a state file, equals the VMs the store has alive)
and no VM is assigned to two tickets.
"""

from __future__ import annotations

import json
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

from corral.api.server import free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ALIVE = {"spawning", "ready", "in_use", "releasing", "terminating"}


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CORRAL_URL"] = url
    env.pop("CORRAL_TOKEN", None)
    return env


def _wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Served:
    """One ``corral serve`` subprocess."""

    def __init__(self, workdir: Path, config: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"serve-{port}-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                *(sys.executable, "-m", "corral.cli", "serve"),
                *("--config", str(config), "--port", str(port)),
            ],
            cwd=workdir,
            env=_env(self.url),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        _wait_for(self.healthy, 30, "corral serve to be ready (/readyz)")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"corral serve exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: Any = None) -> Any:
        response = httpx.post(f"{self.url}{path}", json=body, timeout=10)
        response.raise_for_status()
        return response.json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(30)
        finally:
            self.log.close()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral.cli", *args],
        env=_env(url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def cli_json(url: str, *args: str) -> Any:
    done = cli(url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _config(tmp_path: Path, *, latency: float, min_ready: int, max_vms: int) -> Path:
    config = tmp_path / "corral.yaml"
    config.write_text(
        f"store: sqlite:///{tmp_path / 'corral.db'}\n"
        "pools:\n"
        "  builders:\n"
        "    backend:\n"
        "      type: fake\n"
        f"      spawn_latency: {latency}\n"
        f"      state_file: {tmp_path / 'inventory.json'}\n"
        "    tags: [x86_64]\n"
        f"    max: {max_vms}\n"
        f"    max_starting: {max_vms}\n"
        f"    min_ready: {min_ready}\n"
        "    reuse: {sandbox: true, max_uses: 2}\n"
    )
    return config


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    config = _config(tmp_path, latency=0.05, min_ready=2, max_vms=6)
    server = Served(tmp_path, config, free_port())
    try:
        yield server
    finally:
        assert server.stop() == 0, "corral serve must exit cleanly on SIGTERM"


def test_cli_against_real_server(served: Served) -> None:
    url = served.url
    ticket = cli_json(url, "acquire", "--pool", "builders", "--sandbox", "s1", "--timeout", "30")
    assert ticket["state"] == "assigned"
    assert ticket["address"]
    listed = cli_json(url, "tickets")
    assert ticket["id"] in {t["id"] for t in listed}
    vm_name = ticket["vm"]
    released = cli_json(url, "release", ticket["id"])
    assert released["state"] == "closed"
    # Reuse within the sandbox: the next ticket of s1 gets the same VM back.
    again = cli_json(url, "acquire", "--tag", "x86_64", "--sandbox", "s1", "--timeout", "30")
    assert again["vm"] == vm_name
    cli_json(url, "release", again["id"])
    # max_uses 2 reached: that VM is terminated, not reused.
    _wait_for(
        lambda: served.get(f"/v1/vms/{vm_name}")["state"] not in {"in_use", "releasing", "ready"},
        30,
        "the worn-out VM to be terminated",
    )
    vms = cli_json(url, "vms")
    ready = [v["name"] for v in vms if v["state"] == "ready"]
    assert ready
    terminated = cli_json(url, "vm", "terminate", ready[0])
    assert terminated["state"] in {"terminating", "terminated"}
    pools = cli_json(url, "pools")
    assert pools[0]["name"] == "builders"
    status = cli(url, "status")
    assert status.returncode == 0
    assert "builders" in status.stdout
    timeout = cli(url, "acquire", "--pool", "nope", "--timeout", "1")
    assert timeout.returncode != 0
    assert "pool" in timeout.stderr
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'corral_vms{pool="builders"' in metrics
    log = served.log_path.read_text()
    assert "no api.tokens configured" in log and "127.0.0.1 only" in log
    assert f"corral serving on {url}" in log


def test_sigterm_during_spawn_storm_then_restart(tmp_path: Path) -> None:
    config = _config(tmp_path, latency=1.0, min_ready=10, max_vms=20)
    first = Served(tmp_path, config, free_port())
    try:
        tickets = [first.post("/v1/tickets", {"pool": "builders"})["id"] for _ in range(15)]
        _wait_for(
            lambda: any(v["state"] == "spawning" for v in first.get("/v1/vms")),
            10,
            "spawns in flight",
        )
    finally:
        assert first.stop(signal.SIGTERM) == 0, "graceful exit on SIGTERM"

    second = Served(tmp_path, config, free_port())
    try:

        def settled() -> bool:
            states = {t["id"]: t["state"] for t in second.get("/v1/tickets")}
            vms = second.get("/v1/vms")
            return all(states[t] == "assigned" for t in tickets) and not any(
                v["state"] in {"spawning", "terminating", "releasing"} for v in vms
            )

        _wait_for(settled, 60, "every ticket assigned after the restart")
        open_tickets = second.get("/v1/tickets", state="assigned")
        vms_of_tickets = [t["vm"] for t in open_tickets]
        assert len(vms_of_tickets) == len(set(vms_of_tickets)), "a VM assigned twice"
        stored_alive = {v["name"] for v in second.get("/v1/vms") if v["state"] in ALIVE}
        inventory = json.loads((tmp_path / "inventory.json").read_text())["vms"]
        backend_alive = {name for name, vm in inventory.items() if vm["alive"]}
        assert backend_alive == stored_alive, "leaked or lost VMs"
        assert len(stored_alive) <= 20
    finally:
        assert second.stop(signal.SIGINT) == 0, "graceful exit on SIGINT too"
