"""A real server process stopped (SIGTERM) or killed (SIGKILL) while a client waits, then
restarted on the same store (issue 8, item 8).

What must hold: the stopping server answers its long-polls cleanly (no traceback, no 500) and
keeps the waiting ticket; the client backs off, reconnects to the next server and gets a VM for
the *same* ticket; an idempotency key recorded before the restart is found after it; nothing is
left open at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from apitools import ADMIN_TOKEN, ALICE_TOKEN

from corral.api.server import free_port
from corral.client import Client, models

ROOT = Path(__file__).resolve().parents[2]

RUN = """
import asyncio, sys
from corral.api.server import Server
from corral.config import load_config
asyncio.run(Server(load_config(sys.argv[1]), port=int(sys.argv[2])).run())
"""


def _until(predicate: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not in time: {what}")
        time.sleep(0.05)


class Process:
    """``corral``'s server in a subprocess, on one config and port."""

    def __init__(self, config: Path, port: int, log: Path) -> None:
        self.config, self.port, self.log = config, port, log
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", RUN, str(self.config), str(self.port)],
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        _until(self._healthy, "the server is ready (/readyz)")

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"the server exited: {self.log.read_text()}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self, sig: signal.Signals) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(60)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Process]:
    config = {
        "store": f"sqlite:///{tmp_path / 'corral.db'}",
        "api": {
            "tokens": {
                ADMIN_TOKEN: {"owner": "root", "role": "admin"},
                ALICE_TOKEN: {"owner": "alice", "role": "user"},
            }
        },
        "pools": {
            "tiny": {"backend": {"type": "fake"}, "max": 1, "max_starting": 1, "min_ready": 0}
        },
    }
    path = tmp_path / "corral.yaml"
    path.write_text(yaml.safe_dump(config))
    process = Process(path, free_port(), tmp_path / "server.log")
    process.start()
    try:
        yield process
    finally:
        if process.proc is not None and process.proc.poll() is None:
            process.proc.kill()
            process.proc.wait(30)


def _open(url: str) -> list[models.Ticket]:
    with Client(url, token=ADMIN_TOKEN) as admin:
        return [t for t in admin.list_tickets() if t.state in {"waiting", "assigned"}]


@pytest.mark.slow
@pytest.mark.timeout(300)  # two server starts and waits of up to 60 + 120 s on a loaded machine
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_acquire_survives_a_server_restart(served: Process, sig: signal.Signals) -> None:
    """Fails without the stopping server's clean answer (SIGTERM: tracebacks, a 500, the ticket
    cancelled) or without the client's reconnection (it gives up and leaves a ticket behind)."""
    url = served.url
    with Client(url, token=ALICE_TOKEN) as alice:
        holder = alice.create_ticket(pool="tiny", ttl=600, wait=30)
        assert holder.state == "assigned", holder
        keyed = alice.send(_create_with_key("k-restart-0001"))
    outcome: dict[str, Any] = {}

    def acquire() -> None:
        try:
            with Client(url, token=ALICE_TOKEN) as client:
                with client.acquire(pool="tiny", ttl=600, timeout=120) as ticket:
                    outcome["ticket"] = ticket
        except BaseException as exc:  # reported to the test below
            outcome["error"] = exc

    waiter = threading.Thread(target=acquire, daemon=True)
    waiter.start()
    _until(lambda: len(_open(url)) == 3, "the acquire's ticket is waiting")
    before = {t.id for t in _open(url)} - {holder.id, keyed.id}
    assert len(before) == 1
    [waiting_id] = before

    code = served.stop(sig)
    if sig == signal.SIGTERM:
        assert code == 0, served.log.read_text()
        log = served.log.read_text()
        assert "Traceback" not in log, log
        assert "Exception in ASGI" not in log, log
    assert waiter.is_alive(), "the client must keep waiting through the restart"

    served.start()
    tickets = {t.id: t for t in _open(url)}
    assert tickets[waiting_id].state == "waiting", "the stop must not cancel the waiting ticket"
    with Client(url, token=ALICE_TOKEN) as alice:
        found = alice.send(_find("k-restart-0001"))
        assert found.id == keyed.id, "the key recorded before the restart is found after it"
        alice.close_ticket(keyed.id)
        alice.close_ticket(holder.id)  # frees the pool's only VM slot for the waiting ticket
    waiter.join(120)
    assert not waiter.is_alive(), "the acquire did not end"
    assert "error" not in outcome, outcome.get("error")
    assert outcome["ticket"].id == waiting_id, "the same ticket, not a second one"
    _until(lambda: _open(url) == [], "every ticket closed at the end")
    with Client(url, token=ADMIN_TOKEN) as admin:
        mine = [t for t in admin.list_tickets(owner="alice")]
        assert len(mine) == 3, [(t.id, t.state) for t in mine]


def _create_with_key(key: str) -> Any:
    from corral.client import core

    return core.create_ticket(pool="tiny", ttl=600, key=key)


def _find(key: str) -> Any:
    from corral.client import core

    return core.find_ticket(key)
