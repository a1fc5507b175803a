"""Acceptance on real TCG guests: ``corral serve`` with a libvirt pool on a ``libvirtd`` that the
fixture starts (``qemu:///system``), driven by the ``corral`` command; then kill -9 of the
controller in the middle of spawns, ten times, checking after each kill that every domain and VM
folder of the pool is known to the store, and after the last restart that the store and the
hypervisor agree exactly.

Breakages these catch: a domain defined before its VM is recorded (a leak after a kill),
reconciliation that misses folders or domains, a terminate that leaves files, restarts that lose
VMs or leave them spawning forever.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api.server import free_port

from . import guest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(guest.available() is not None, reason=str(guest.available())),
    pytest.mark.skipif(os.geteuid() != 0, reason="starts libvirtd (needs root)"),
]

ROOT = Path(__file__).resolve().parents[3]
POOL = "tcg"
KNOWN = {"spawning", "ready", "in_use", "releasing", "terminating", "failed"}
ALIVE = {"spawning", "ready", "in_use", "releasing", "terminating"}


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _system_answers() -> bool:
    done = subprocess.run(
        ["virsh", "-c", "qemu:///system", "version"], capture_output=True, check=False, timeout=30
    )
    return done.returncode == 0


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[None]:
    """A running system libvirtd (and virtlogd): used if already there, else started and stopped."""
    if _system_answers():
        yield
        return
    run = Path(tempfile.mkdtemp(prefix="corral-libvirtd-"))
    started = []
    for daemon in ("virtlogd", "libvirtd"):
        pidfile = run / f"{daemon}.pid"
        subprocess.run([daemon, "-d", "-p", str(pidfile)], check=True, timeout=60)
        wait_for(pidfile.exists, 30, f"{daemon}'s pid file")
        started.append(int(pidfile.read_text().strip()))
    wait_for(_system_answers, 60, "libvirtd to answer")
    try:
        yield
    finally:
        for pid in reversed(started):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        shutil.rmtree(run, ignore_errors=True)


@pytest.fixture(scope="module")
def workdir(libvirtd: None) -> Iterator[Path]:
    """A folder libvirt's QEMU user can traverse (pytest's tmp folders are 0700)."""
    destroy_pool_domains()  # left by an earlier run that died: the store here never knew them
    folder = Path(tempfile.mkdtemp(prefix="corral-libvirt-", dir="/var/tmp"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        destroy_pool_domains()
        shutil.rmtree(folder, ignore_errors=True)


_SYSTEM_SCRIPT = """
import json, sys
import libvirt
from corral.backends.libvirt import domxml
libvirt.registerErrorHandler(lambda *_: None, None)
action, pool = sys.argv[1:]
conn = libvirt.open("qemu:///system")
names = []
for dom in conn.listAllDomains():
    try:  # a transient domain corral is destroying can vanish between the listing and here
        mark = domxml.parse_mark(dom.XMLDesc(0))
        if mark is None or mark.pool != pool:
            continue
        name = dom.name()
        if action == "destroy":
            persistent = dom.isPersistent()
            if dom.isActive():
                dom.destroy()
            if persistent:
                dom.undefine()
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            raise
        continue
    names.append(name)
print(json.dumps(names))
"""


def _system(action: str) -> set[str]:
    """Ask libvirtd from a separate process: an embedded QEMU driver that another test opened in
    this process claims every qemu:/// URI here, and leaves no remote driver to reach libvirtd."""
    done = subprocess.run(
        [sys.executable, "-c", _SYSTEM_SCRIPT, action, POOL],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env=_env("http://unused"),
    )
    return set(json.loads(done.stdout))


def pool_domains() -> set[str]:
    return _system("list")


def destroy_pool_domains() -> None:
    _system("destroy")


def write_config(folder: Path, tiny: guest.Guest) -> Path:
    config = folder / "corral.yaml"
    backend = {
        "type": "libvirt",
        "hypervisors": [{"uri": "qemu:///system", "max_creations": 2}],
        "domain": {
            "domain_type": "qemu",
            "boot": {
                "kernel": str(tiny.kernel),
                "initrd": str(tiny.initrd),
                "cmdline": guest.CMDLINE,
            },
            "nics": [{"type": "user"}],
        },
        "readiness": {"method": "console"},
        "storage_dir": str(folder / "vms"),
    }
    pool = {
        "backend": backend,
        "tags": ["tcg"],
        "max": 3,
        "max_starting": 3,
        "min_ready": 2,
        "template": {"memory_mib": 160, "vcpus": 1},
        "spawn_timeout": 400,
        "poll_interval": 0.5,
        "reuse": {"sandbox": True, "max_uses": 3},
    }
    raw = {"store": f"sqlite:///{folder / 'corral.db'}", "pools": {POOL: pool}}
    config.write_text(json.dumps(raw, indent=1), encoding="utf-8")  # JSON is YAML
    return config


def _env(url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["CORRAL_URL"] = url
    env.pop("CORRAL_TOKEN", None)
    return env


class Served:
    """One ``corral serve`` subprocess."""

    def __init__(self, folder: Path, config: Path) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = folder / f"serve-{port}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "corral.cli",
                "serve",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            cwd=folder,
            env=_env(self.url),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_for(self.healthy, 60, "corral serve to be ready (/readyz)")

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"corral serve exited with {self.process.returncode}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def get(self, path: str, **params: Any) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=30)
        response.raise_for_status()
        return response.json()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(120)
        finally:
            self.log.close()


def cli_json(served: Served, *args: str) -> Any:
    """Run ``corral ARGS --json`` against ``served``; a failure quotes the server's log."""
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", *args, "--json"],
        env=_env(served.url),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0:
        served.log.flush()
        tail = served.log_path.read_text(encoding="utf-8", errors="replace")[-4000:]
        raise AssertionError(f"corral {' '.join(args)}: {done.stderr}\nserver log:\n{tail}")
    return json.loads(done.stdout)


def store_vms(folder: Path) -> dict[str, str]:
    with sqlite3.connect(folder / "corral.db") as db:
        rows = db.execute("select name, state from vms where pool = ?", (POOL,)).fetchall()
    return {name: state for name, state in rows}


def inventory(folder: Path) -> set[str]:
    """What the hypervisor and the disk hold for the pool: marked domains and VM folders."""
    vms = folder / "vms" / POOL
    folders = {p.name for p in vms.iterdir()} if vms.is_dir() else set()
    return pool_domains() | folders


def test_serve_acquire_release_reuse_terminate_then_kill_9_restarts(workdir: Path) -> None:
    tiny = guest.build(workdir)
    config = write_config(workdir, tiny)
    served = Served(workdir, config)
    try:
        with ThreadPoolExecutor(2) as pool:  # two VMs at once, through the CLI
            tickets = list(
                pool.map(
                    lambda s: cli_json(
                        served,
                        "acquire",
                        "--pool",
                        POOL,
                        "--owner",
                        "ci",
                        "--sandbox",
                        s,
                        "--timeout",
                        "500",
                    ),
                    ["s1", "s2"],
                )
            )
        assert [t["state"] for t in tickets] == ["assigned", "assigned"]
        assert {t["address"] for t in tickets} == {"10.0.2.15"}
        names = {t["vm"] for t in tickets}
        assert names <= pool_domains()
        vms = {v["name"]: v for v in cli_json(served, "vms")}
        assert {vms[n]["state"] for n in names} == {"in_use"}
        first = tickets[0]
        cli_json(served, "release", first["id"])
        again = cli_json(served, "acquire", "--pool", POOL, "--sandbox", "s1", "--timeout", "500")
        assert again["vm"] == first["vm"]  # reused within its sandbox
        cli_json(served, "release", again["id"])
        cli_json(served, "release", tickets[1]["id"])
        cli_json(served, "vm", "terminate", first["vm"])
        wait_for(lambda: first["vm"] not in pool_domains(), 120, "the terminated VM's domain")
        wait_for(lambda: not (workdir / "vms" / POOL / first["vm"]).exists(), 60, "its files")
    finally:
        assert served.stop() == 0

    rng = random.Random(10)
    for cycle in range(10):
        served = Served(workdir, config)
        wait_for(
            lambda server=served: any(v["state"] == "spawning" for v in server.get("/v1/vms")),
            120,
            "a spawn in flight",
        )
        time.sleep(rng.uniform(0.0, 3.0))
        served.stop(signal.SIGKILL)
        known = {n for n, s in store_vms(workdir).items() if s in KNOWN}
        leaked = inventory(workdir) - known
        assert not leaked, f"cycle {cycle}: domains or files the store does not know: {leaked}"

    served = Served(workdir, config)
    try:

        def settled() -> bool:
            vms = served.get("/v1/vms")
            states = [v["state"] for v in vms if v["state"] in ALIVE]
            return (
                states.count("ready") >= 2
                and "spawning" not in states
                and ("terminating" not in states)
            )

        wait_for(settled, 900, "two ready VMs and nothing in flight after the restarts")
        alive = {n for n, s in store_vms(workdir).items() if s in ALIVE}
        wait_for(lambda: inventory(workdir) == alive, 120, "store and hypervisor to agree")
        assert len(alive) <= 3
        ticket = cli_json(served, "acquire", "--pool", POOL, "--timeout", "500")
        assert ticket["address"] == "10.0.2.15"
        cli_json(served, "release", ticket["id"])
    finally:
        assert served.stop() == 0
