"""Chaos: three ``corral serve`` processes on one PostgreSQL, one pool on the script backend
(its inventory is a folder of files), a ticket storm through all three hosts, and repeated
``kill -9`` of the pool's leader (and of others), each killed host restarted as a new
incarnation.

After every kill, within the lease plus a margin: a live host leads the pool, and the dead
incarnation's unfinished tasks were moved to a survivor (the conditional claim moves each at
most once). Throughout (sampled): at most ``max`` machines in the backend and alive VMs in the
store, no two open tickets on one VM. At the end: every ticket the clients created exists and
was assigned, and the backend's inventory equals the store's alive VMs. A history in the Jepsen
style is recorded and checked at the end: every lock grant (a trigger on the lock table: key,
owner, host, mode, fencing token) and every backend create/delete (the script commands log
host, VM and times; one spawn in ten outlasts lease + heartbeat): tokens strictly increase per
key, no grant conflicts with a holder, no two hosts ran create/delete on one VM at once.

``CORRAL_CHAOS_KILLS`` sets the number of kills (default 15; CI may run fewer). Slow; needs
``CORRAL_TEST_PG_URL``. Breakages this catches (each makes it fail): leadership not taken over
(``a live host leads`` times out), no takeover of a dead host's tasks (``claimed`` times out),
preallocation on every host instead of the leader only (``max`` exceeded), an assignment that
is not one conditional write (two open tickets on one VM), a takeover that undoes a spawn the
dead host's script is still finishing (inventory and store disagree at the end, or the
backend history shows the survivor's delete overlapping the dead host's create), a lock
granted while another holds it or a token not increasing (the lock history), a dead host's
row left without a task and never terminated (inventory and store disagree).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api.server import free_port
from corral.pools.lifecycle import ALIVE_VM_STATES, OPEN_TICKET_STATES

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(1800)]

LEASE = 2.0
MAX = 4
MARGIN = 10.0
SPAWN_TIMEOUT = 6
KILLS = int(os.environ.get("CORRAL_CHAOS_KILLS", "15"))
HOSTS = ("h1", "h2", "h3")
ALIVE = tuple(s.value for s in ALIVE_VM_STATES)
OPEN = tuple(s.value for s in OPEN_TICKET_STATES)


# one spawn in ten outlasts the lease plus a heartbeat: a survivor that undid a dead host's
# spawn before its deadline would delete the machine while that host's script still creates it
SLOW_SPAWN = 'case "$CORRAL_VM_NAME" in *7) sleep 3;; *) sleep 0.2;; esac'


def write_config(folder: Path, url: str) -> Path:
    inventory = folder / "inventory"
    inventory.mkdir()
    history = folder / "backend-history"

    def log(verb: str, at: str = "start") -> str:
        # verb, VM, host, the script's pid, start|end, the wall clock: one line per event
        return (
            f'echo "{verb} $CORRAL_VM_NAME $CORRAL_CLUSTER_HOST_ID $$ {at} $(date +%s.%N)"'
            f' >> "{history}"'
        )

    new = f'{log("new")}; {SLOW_SPAWN}; touch "{inventory}/$CORRAL_VM_NAME"; '
    new += f"{log('new', 'end')}; echo 127.0.0.1"
    delete = f'{log("delete")}; rm -f "{inventory}/$CORRAL_VM_NAME"; {log("delete", "end")}'
    pool = f"""
store: "{url}"
cluster:
  lease: {LEASE}
pools:
  p:
    backend:
      type: script
      new: ["sh", "-c", '{new}']
      delete: ["sh", "-c", '{delete}']
      list: ["sh", "-c", 'ls "{inventory}"']
      livecheck: ["sh", "-c", 'test -e "{inventory}/$CORRAL_VM_NAME"']
    max: {MAX}
    min_ready: 2
    spawn_timeout: {SPAWN_TIMEOUT}
    terminate_timeout: {SPAWN_TIMEOUT}
    poll_interval: 0.1
"""
    path = folder / "corral.yaml"
    path.write_text(pool)
    return path


@dataclass
class Host:
    host_id: str
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, config: Path) -> None:
        env = {
            **os.environ,
            "CORRAL_CLUSTER_HOST_ID": self.host_id,
            "CORRAL_API_PORT": str(self.port),
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "corral", "serve", "--config", str(config)],
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None


@dataclass
class Storm:
    hosts: list[Host]
    created: set[str] = field(default_factory=set)
    assigned: set[str] = field(default_factory=set)
    stop: bool = False
    errors: list[str] = field(default_factory=list)
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=15))

    def live_url(self, rng: random.Random) -> str:
        live = [h for h in self.hosts if h.running]
        return rng.choice(live).url

    async def call(self, rng: random.Random, method: str, path: str, **kw: Any) -> Any:
        """One request to any live host, retried on another while hosts die."""
        end = time.monotonic() + 60
        while True:
            try:
                response = await self.http.request(method, self.live_url(rng) + path, **kw)
                if response.status_code < 500:
                    return response
            except (httpx.TransportError, IndexError):
                pass
            assert time.monotonic() < end, f"{method} {path}: no host answered for 60 s"
            await asyncio.sleep(0.1)

    async def client(self, seed: int) -> None:
        rng = random.Random(seed)
        n = 0
        while not self.stop:
            n += 1
            # a retried creation (its host died before answering) must not make a second ticket
            key = {"Idempotency-Key": f"chaos-{seed}-{n:06d}"}
            created = await self.call(rng, "POST", "/v1/tickets", json={"pool": "p"}, headers=key)
            assert created.status_code in (200, 201), created.text
            ticket = created.json()["id"]
            self.created.add(ticket)
            end = time.monotonic() + 90
            while True:
                got = await self.call(rng, "GET", f"/v1/tickets/{ticket}", params={"wait": 2})
                assert got.status_code == 200, got.text
                if got.json()["state"] == "assigned":
                    self.assigned.add(ticket)
                    break
                if time.monotonic() > end:
                    self.errors.append(f"ticket {ticket} not assigned within 90 s")
                    break
            await asyncio.sleep(rng.uniform(0.05, 0.3))
            await self.call(rng, "POST", f"/v1/tickets/{ticket}/close")


OBSERVER = "corral-test-observer"
"""The ``application_name`` of the test's own connections, which the storms never kill."""


def db(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name=OBSERVER) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


async def until(check: Any, what: str, timeout: float) -> None:
    """Wait for ``check()`` (blocking: run in a thread, the storm's clients keep going)."""
    end = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.1)


def leader(url: str) -> str | None:
    rows = db(
        url,
        "SELECT l.holder FROM cluster_leases l JOIN cluster_hosts h ON h.session = l.session"
        " WHERE l.name = 'pool/p' AND l.expires_at >= corral_lock_now()"
        " AND h.lease_expires_at >= corral_lock_now()",
    )
    return str(rows[0][0]) if rows else None


def incarnation(url: str, host_id: str) -> int:
    rows = db(url, "SELECT incarnation FROM cluster_hosts WHERE host_id = %s", (host_id,))
    return int(rows[0][0]) if rows else 0


def unfinished_of(url: str, key: str) -> int:
    rows = db(
        url,
        "SELECT count(*) FROM tasks WHERE host = %s"
        " AND state NOT IN ('finished', 'recovered', 'failed')",
        (key,),
    )
    return int(rows[0][0])


def ready(host: Host) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=2)
    try:
        conn.request("GET", "/readyz")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


# --- the Jepsen-style history ---------------------------------------------------------------
# Every lock grant, upgrade and release is recorded by a trigger on the lock table (in commit
# order: every lock function holds one transaction-level advisory lock) with the host whose
# session made the request; every backend call by the script backend's commands themselves
# (``write_config``), with the host that ran them.

HISTORY_SQL = """
CREATE TABLE chaos_history (
  id bigserial PRIMARY KEY, op text, key text, owner text, host text, mode text, token bigint);
CREATE FUNCTION chaos_record() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE r lock_grants;
BEGIN
  IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
  INSERT INTO chaos_history (op, key, owner, host, mode, token)
  VALUES (TG_OP, r.key, r.owner,
          (SELECT host_id FROM cluster_hosts
           WHERE session = split_part(r.request_id, '.', 1)), r.mode, r.token);
  RETURN NULL;
END $$;
CREATE TRIGGER chaos_record AFTER INSERT OR UPDATE OR DELETE ON lock_grants
  FOR EACH ROW EXECUTE FUNCTION chaos_record();
"""


def install_history(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(HISTORY_SQL.encode())  # bytes: several statements, no parameters


def lock_history(url: str) -> tuple[int, list[str]]:
    """Replay the lock history: tokens strictly increase per key, and no grant is made while
    another owner holds the key in a conflicting mode (so no two hosts held one VM's lock at
    once). Returns the number of grants and the violations."""
    rows = db(url, "SELECT op, key, owner, host, mode, token FROM chaos_history ORDER BY id")
    return check_lock_rows(rows)


def check_lock_rows(rows: list[tuple[Any, ...]]) -> tuple[int, list[str]]:
    """The checker of :func:`lock_history` on rows (op, key, owner, host, mode, token)."""
    holders: dict[str, dict[str, tuple[str, str]]] = {}
    last: dict[str, int] = {}
    bad: list[str] = []
    grants = 0
    for op, key, owner, host, mode, token in rows:
        held = holders.setdefault(key, {})
        if op == "DELETE":
            held.pop(owner, None)
            continue
        grants += 1
        if token <= last.get(key, 0):
            bad.append(f"{key}: token {token} granted to {owner}@{host} after {last[key]}")
        last[key] = token
        others = {o: h for o, h in held.items() if o != owner}
        if any(mode == "x" or m == "x" for _, m in others.values()):
            bad.append(f"{key}: {owner}@{host} granted {mode} while {others} hold it")
        held[owner] = (str(host), str(mode))
    return grants, bad


def backend_history(path: Path) -> tuple[int, list[str]]:
    """The backend calls that create or delete a machine: no two hosts ran such calls on one
    VM at overlapping times. Returns the number of calls and the violations."""
    return check_backend_lines(path.read_text().splitlines() if path.exists() else [])


def check_backend_lines(lines: list[str]) -> tuple[int, list[str]]:
    """The checker of :func:`backend_history` on its log lines."""
    started: dict[tuple[str, str, str], tuple[float, str]] = {}
    calls: dict[str, list[tuple[float, float, str, str]]] = {}
    for line in lines:
        verb, vm, host, pid, at, when = line.split()
        if at == "start":
            started[(verb, vm, pid)] = (float(when), host)
        elif (verb, vm, pid) in started:
            begin, host = started.pop((verb, vm, pid))
            calls.setdefault(vm, []).append((begin, float(when), host, verb))
    for (verb, vm, _), (begin, host) in started.items():  # killed by its timeout: ended then
        calls.setdefault(vm, []).append((begin, begin + SPAWN_TIMEOUT, host, verb))
    bad: list[str] = []
    for vm, spans in calls.items():
        spans.sort()
        for i, (b1, e1, h1, v1) in enumerate(spans):
            for b2, _, h2, v2 in spans[i + 1 :]:
                if b2 < e1 and h1 != h2:
                    bad.append(f"{vm}: {v1} on {h1} [{b1:.3f}, {e1:.3f}] overlaps {v2} on {h2}")
    return sum(len(s) for s in calls.values()), bad


async def sample(url: str, inventory: Path, storm: Storm, violations: list[str]) -> None:
    while not storm.stop:
        await asyncio.to_thread(check_once, url, inventory, violations)
        await asyncio.sleep(0.05)


def check_once(url: str, inventory: Path, violations: list[str]) -> None:
    """One sample of the invariants: ``max`` in the backend and the store, no shared VM."""
    files = len(list(inventory.iterdir()))
    alive = db(url, "SELECT count(*) FROM vms WHERE state = ANY(%s)", (list(ALIVE),))[0][0]
    shared = db(
        url,
        "SELECT vm FROM tickets WHERE state = ANY(%s) AND vm IS NOT NULL"
        " GROUP BY vm HAVING count(*) > 1",
        (list(OPEN),),
    )
    if files > MAX:
        violations.append(f"{files} machines in the backend > max {MAX}")
    if alive > MAX:
        violations.append(f"{alive} alive VMs in the store > max {MAX}")
    if shared:
        violations.append(f"open tickets share VMs {shared}")


async def check_the_end(url: str, folder: Path) -> None:
    """After the storm: the backend's inventory equals the store's alive VMs, and the lock and
    backend histories hold (see ``lock_history``, ``backend_history``)."""
    inventory = folder / "inventory"
    differ: list[str] = []

    def consistent() -> bool:
        names = {p.name for p in inventory.iterdir()}
        alive = {
            r[0] for r in db(url, "SELECT name FROM vms WHERE state = ANY(%s)", (list(ALIVE),))
        }
        if names != alive:
            differ.append(f"backend only {names - alive}, store only {alive - names}")
        return names == alive

    try:
        await until(consistent, "backend inventory == store's alive VMs", 60)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {differ[-1:]}") from None
    grants, bad_locks = lock_history(url)
    calls, bad_calls = backend_history(folder / "backend-history")
    print(f"history: {grants} lock grants, {calls} backend calls checked")
    assert grants > 0 and calls > 0
    assert not bad_locks, bad_locks[:5]
    assert not bad_calls, bad_calls[:5]


async def test_kill_minus_nine_storm_over_three_hosts(pg_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, pg_url)
    inventory = tmp_path / "inventory"
    hosts = [Host(h, free_port(), tmp_path / f"{h}.log") for h in HOSTS]
    rng = random.Random(20261202)
    storm = Storm(hosts)
    violations: list[str] = []
    clients: list[asyncio.Task[None]] = []
    hosts[0].start(config)  # the first one migrates the database alone
    try:
        await until(lambda: ready(hosts[0]), "h1 ready", 60)
        install_history(pg_url)  # migrated by h1; its first grants may precede the trigger
        for h in hosts[1:]:
            h.start(config)
        for h in hosts[1:]:
            await until(lambda h=h: ready(h), f"{h.host_id} ready", 60)
        await until(lambda: leader(pg_url) is not None, "a leader", LEASE + MARGIN)
        clients = [asyncio.create_task(storm.client(i)) for i in range(6)]
        sampler = asyncio.create_task(sample(pg_url, inventory, storm, violations))
        for kill in range(KILLS):
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            led = leader(pg_url)
            victim = next(
                (h for h in hosts if h.host_id == led and rng.random() < 0.7),
                rng.choice(hosts),
            )
            key = f"{victim.host_id}#{incarnation(pg_url, victim.host_id)}"
            victim.kill()
            await until(
                lambda v=victim: leader(pg_url) not in (None, v.host_id),
                f"kill {kill}: a live host leads after {victim.host_id} died",
                LEASE + MARGIN,
            )
            await until(
                lambda k=key: unfinished_of(pg_url, k) == 0,
                f"kill {kill}: {key}'s tasks claimed",
                LEASE + MARGIN,
            )
            victim.start(config)
            await until(lambda v=victim: ready(v), f"{victim.host_id} back", 60)
            assert not violations, violations[:5]
            for task in clients:
                if task.done():
                    task.result()  # a client's failed assertion surfaces here
        storm.stop = True
        await asyncio.gather(*clients)
        await sampler
        assert not violations, violations[:5]
        assert not storm.errors, storm.errors[:5]
        assert storm.created and storm.created == storm.assigned
        for ticket in storm.created:
            got = await storm.call(rng, "GET", f"/v1/tickets/{ticket}")
            assert got.status_code == 200, f"ticket {ticket} lost"

        await check_the_end(pg_url, tmp_path)
    finally:
        storm.stop = True
        for task in clients:  # a failed run: no client may call on a closed connection pool
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        await storm.http.aclose()
        for h in hosts:
            if h.proc is not None:
                h.proc.send_signal(signal.SIGTERM)
        for h in hosts:
            if h.proc is not None:
                try:
                    h.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(h.proc.pid, signal.SIGKILL)
                    h.proc.wait(timeout=10)
