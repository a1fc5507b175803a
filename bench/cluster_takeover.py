"""Takeover time: ``kill -9`` of a pool's leader to the first action of the new leader.

Run: ``python bench/cluster_takeover.py`` (about two minutes; ``--rounds``, ``--leases``).
Needs PostgreSQL (``--pg``, default ``postgresql://root@127.0.0.1:5432/test``: a scratch
database is created next to it and dropped). Two ``corral serve`` processes (one pool ``p`` on
the fake backend) share the database; each round kills the pool's leader with SIGKILL and
watches ``cluster_leases`` until the survivor has taken the pool's lease (a new epoch): the new
leader's first action, since it neither preallocates nor maintains before. The take's instant
is read from the lease row (``expires_at - lease``, the database's clock, this machine), the
kill's from this process's wall clock. The killed host is then restarted for the next round.

The figure to compare with is the configured lease: a host is dead ``lease`` seconds after its
last heartbeat (which was up to one heartbeat interval, ``min(lease / 3, 1 s)``, before the
kill), and a survivor notices at its next heartbeat: expected between ``lease - interval`` and
``lease + interval``.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


def _db(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _ready(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _wait(check: Any, what: str, timeout: float, step: float = 0.01) -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise SystemExit(f"not within {timeout} s: {what}")
        time.sleep(step)


def _lease_row(url: str) -> tuple[str, int, float] | None:
    rows = _db(url, "SELECT holder, epoch, expires_at FROM cluster_leases WHERE name = 'pool/p'")
    if not rows or rows[0][0] is None:
        return None
    return str(rows[0][0]), int(rows[0][1]), float(rows[0][2])


class Host:
    """One ``corral serve`` process."""

    def __init__(self, host_id: str, port: int, config: Path, log: Path) -> None:
        self.host_id, self.port, self.config, self.log = host_id, port, config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **os.environ,
            "CORRAL_CLUSTER_HOST_ID": self.host_id,
            "CORRAL_API_PORT": str(self.port),
            "PYTHONPATH": str(ROOT),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "corral", "serve", "--config", str(self.config)],
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
        _wait(lambda: _ready(self.port), f"{self.host_id} ready", 90, 0.1)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=60)
            self.proc = None


def takeover_times(url: str, lease: float, rounds: int, folder: Path) -> list[float]:
    """Seconds from the leader's kill to the survivor's take of the pool lease, per round."""
    from corral.api.server import free_port

    config = folder / f"corral-{lease:g}.yaml"
    config.write_text(
        f'store: "{url}"\ncluster:\n  lease: {lease}\n'
        "pools:\n  p:\n    backend: {type: fake}\n    max: 2\n    min_ready: 0\n"
    )
    hosts = [Host(f"b{i}-{lease:g}", free_port(), config, folder / f"b{i}.log") for i in (1, 2)]
    times = []
    try:
        for h in hosts:
            h.start()
        for _ in range(rounds):
            _wait(lambda: _lease_row(url) is not None, "a leader", 3 * lease + 10)
            row = _lease_row(url)
            assert row is not None
            leader = next(h for h in hosts if h.host_id == row[0])
            killed = time.time()
            leader.kill()
            _wait(
                lambda epoch=row[1]: (r := _lease_row(url)) is not None and r[1] > epoch,
                "the survivor's take",
                3 * lease + 10,
            )
            taken = _lease_row(url)
            assert taken is not None and taken[0] != leader.host_id
            times.append(taken[2] - lease - killed)
            leader.start()
            time.sleep(lease)  # the restarted host settles (it may take its share back)
    finally:
        for h in hosts:
            h.kill(signal.SIGTERM)
    return times


def _scratch_db(admin: str) -> tuple[str, str]:
    import psycopg

    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return name, urlsplit(admin)._replace(path=f"/{name}").geturl()


def _drop_db(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    """Print the takeover time per configured lease (median, min, max of the rounds)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--leases", default="2,5")
    args = parser.parse_args()
    print(
        "takeover: kill -9 of the leader -> new leader's lease take "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    print(f"{'lease':>7} {'interval':>9} {'median':>8} {'min':>7} {'max':>7}  rounds")
    for lease in (float(x) for x in args.leases.split(",")):
        name, url = _scratch_db(args.pg)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                times = takeover_times(url, lease, args.rounds, Path(tmp))
        finally:
            _drop_db(args.pg, name)
        interval = min(lease / 3, 1.0)
        print(
            f"{lease:>6.1f}s {interval:>8.2f}s {statistics.median(times):>7.2f}s "
            f"{min(times):>6.2f}s {max(times):>6.2f}s  {len(times)}"
        )
    print(f"(load {os.getloadavg()[0]:.1f} at the end; expected: lease +/- one interval)")


if __name__ == "__main__":
    main()
