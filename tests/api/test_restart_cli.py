"""``corral acquire`` (the command, in its own process) waits through a server restart and
leaves no ticket behind (issue 8, "Done means").

``test_restart.py`` drives the Python client's ``acquire`` in a thread; this runs the real
command: ``corral acquire --pool tiny -- true`` waits for the pool's only VM while the server is
stopped (SIGTERM) or killed (SIGKILL) and started again on the same store.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN
from test_restart import ROOT, Process, _open, _until, served  # noqa: F401  (served: a fixture)

from corral.client import Client


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
def test_the_acquire_command_survives_a_server_restart(
    served: Process,  # noqa: F811
    sig: signal.Signals,
) -> None:
    """Fails when the command gives up on the restart (exit status not 0), creates a second
    ticket after it (the first is left behind), or leaves its ticket open after its command."""
    url = served.url
    with Client(url, token=ALICE_TOKEN) as alice:
        holder = alice.create_ticket(pool="tiny", ttl=600, wait=30)
        assert holder.state == "assigned", holder
    argv = [sys.executable, "-m", "corral", "acquire", "--url", url, "--token", ALICE_TOKEN]
    argv += ["--pool", "tiny", "--ttl", "600", "--timeout", "200", "--", "true"]
    command = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        _until(lambda: len(_open(url)) == 2, "the command's ticket is waiting")
        [waiting_id] = {t.id for t in _open(url)} - {holder.id}
        served.stop(sig)
        assert command.poll() is None, "the command must keep waiting through the restart"
        served.start()
        # open still (the fake backend's VMs do not outlive the process: the holder's may be
        # found gone and replaced, and the command's ticket served before the holder closes)
        assert waiting_id in {t.id for t in _open(url)} or command.poll() is not None
        with Client(url, token=ALICE_TOKEN) as alice:
            alice.close_ticket(holder.id)  # the pool's only VM goes to the waiting command
        out, _ = command.communicate(timeout=200)
    finally:
        if command.poll() is None:
            command.kill()
            command.communicate(timeout=30)
    assert command.returncode == 0, out
    _until(lambda: _open(url) == [], "every ticket closed at the end")
    with Client(url, token=ADMIN_TOKEN) as admin:
        mine = {t.id for t in admin.list_tickets(owner="alice")}
    assert mine == {holder.id, waiting_id}, "the same ticket across the restart, no second one"
