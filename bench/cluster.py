"""Distributed locks across processes: corral's ``PgLockManager`` against tooz, same run.

Run: ``python bench/cluster.py`` (about two minutes; ``--quick`` for a fast look;
``--rows locks,commit,tasks,handover,wakeup,scale`` and ``--targets corral-pg,tooz-pg,tooz-redis``
measure only some rows, e.g. ``--rows locks,tasks`` while iterating on the lock manager). Needs
PostgreSQL (``--pg``, default ``postgresql://root@127.0.0.1:5432/test``: a scratch database is
created next to it and dropped) and Redis (``--redis``, default ``redis://127.0.0.1:6379``).
Prints, as medians of several runs, side by side:

- exclusive acquire+release pairs/s on one key, uncontended (one process) and with 4 processes
  contending, for corral on PostgreSQL (strict FIFO, durable fencing tokens), tooz's
  ``postgresql`` driver (advisory locks: no FIFO, no tokens) and tooz's ``redis`` driver;
- for corral, a check that the fencing tokens every process saw are distinct and increasing
  per process (a broken grant would show here);
- the lock hand-over across hosts: process A releases, process B (queued) is woken by NOTIFY;
  p50/p99 from the release call to B's grant (clock of one machine, both processes);
- the round trip of a durable and of a lazy one-row commit (what bounds a client that waits
  for every durable grant), and durable tasks/s on PostgreSQL with the distributed locks
  against in-process locks (:func:`tasks_rate`), interleaved in the same run;
- the cross-host wake-up of a ticket: a VM ready through host A to the ticket waiting on host
  B assigned by B, p50/p99 (see :func:`wakeup`);
- scale-out: the resalloc workload through ``corral serve`` on 1, 2 and 3 hosts sharing one
  database, clients spread over the hosts (:func:`scale_out`): tickets/s and the ratio to one
  host (on one 2-core machine this measures the cost of coordination, not scale-out).

Each measuring process is started with ``spawn``, connects, waits at a barrier with the others,
then counts its pairs for a fixed time.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

KEY = "vm/bench"


def _corral_worker(url: str, idx: int, barrier: Any, duration: float) -> tuple[int, list[int]]:
    from corral.locks.pg import PgLockManager

    async def main() -> tuple[int, list[int]]:
        async with PgLockManager(url, host_id=f"bench-{idx}-{os.getpid()}", lease=30.0) as locks:
            owner = f"owner-{idx}"
            tokens: list[int] = []
            await asyncio.to_thread(barrier.wait, 300)
            end = time.time() + duration
            n = 0
            while time.time() < end:
                async with locks.acquire(KEY, owner=owner) as held:
                    tokens.append(held.token(KEY))
                n += 1
            return n, tokens

    return asyncio.run(main())


def _tooz_worker(url: str, idx: int, barrier: Any, duration: float) -> tuple[int, list[int]]:
    from tooz import coordination

    coord = coordination.get_coordinator(url, f"bench-{idx}-{os.getpid()}".encode())
    coord.start()
    try:
        lock = coord.get_lock(KEY.replace("/", "-").encode())
        barrier.wait(300)
        end = time.time() + duration
        n = 0
        while time.time() < end:
            lock.acquire(blocking=True)
            lock.release()
            n += 1
        return n, []
    finally:
        coord.stop()


def _run(worker: Any, url: str, idx: int, barrier: Any, duration: float, out: Any) -> None:
    out.put(worker(url, idx, barrier, duration))


def measure(kind: str, url: str, procs: int, duration: float) -> tuple[float, bool]:
    """Pairs/s of ``procs`` processes on one key; and whether the tokens check out.

    Every process connects first, then all start their window together (a barrier).
    """
    worker = _corral_worker if kind == "corral" else _tooz_worker
    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(procs), ctx.Queue()
    workers = [
        ctx.Process(target=_run, args=(worker, url, i, barrier, duration, out))
        for i in range(procs)
    ]
    for proc in workers:
        proc.start()
    results = [out.get(True, 600) for _ in workers]
    for proc in workers:
        proc.join(60)
    total = sum(n for n, _ in results)
    tokens = [t for _, ts in results for t in ts]
    ok = len(tokens) == len(set(tokens)) and all(ts == sorted(ts) for _, ts in results)
    return total / duration, ok


def _handover_b(url: str, ready: Any, go: Any, granted: Any, rounds: int) -> None:
    from corral.locks.pg import PgLockManager

    async def main() -> None:
        async with PgLockManager(url, host_id=f"handover-b-{os.getpid()}", lease=30.0) as locks:
            for _ in range(rounds):
                await asyncio.to_thread(go.wait, 60)
                go.clear()
                async with locks.acquire("vm/handover", owner="b", on_wait=ready.set):
                    granted.put(time.perf_counter())

    asyncio.run(main())


async def handover(url: str, rounds: int) -> list[float]:
    """Latency (s) from A's release to B's grant, B queued behind A in another process.

    Strict alternation: B queues (``ready``), A releases, B is granted and releases, A takes
    the lock again and only then lets B queue again (``go``).
    """
    from corral.locks.pg import PgLockManager

    ctx = mp.get_context("spawn")
    ready, go, granted = ctx.Event(), ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_handover_b, args=(url, ready, go, granted, rounds))
    lat: list[float] = []
    async with PgLockManager(url, host_id=f"handover-a-{os.getpid()}", lease=30.0) as locks:
        held = await locks.acquire("vm/handover", owner="a")
        proc.start()
        go.set()
        for _ in range(rounds):
            await asyncio.to_thread(ready.wait, 60)
            ready.clear()
            t0 = time.perf_counter()
            held.release()
            t1 = await asyncio.to_thread(granted.get, True, 60)
            lat.append(t1 - t0)
            held = await locks.acquire("vm/handover", owner="a", timeout=60.0)
            go.set()
        held.release()
    await asyncio.to_thread(proc.join, 60)
    return lat


async def wakeup(url: str, rounds: int) -> list[float]:
    """Latency (s) from a VM becoming ready through host A to the waiting ticket of host B
    assigned and B's long-poll answered (SPEC §8 wake-ups).

    Two controllers on one database, each with its own connections (two hosts in one
    process: one event loop runs both). A spawns (it maintains the pool), B only serves
    tickets. A's assignment round after its own commit assigns B's ticket (a VM freed on one
    host is not announced to the others: its host's round covers every host's tickets), and
    B's long-poll hears of it by A's NOTIFY. Both ticks are 120 s, so no periodic re-read can
    deliver it. Each round B queues a ticket behind the pool's only VM (``max: 1``) and closes
    the previous one: the VM is terminated, A spawns the next (the fake backend, instant) and
    its ``ready`` event on A starts the clock.
    """
    from corral.backends import validate_options
    from corral.backends.fake import FakeBackend
    from corral.config import parse_config
    from corral.controller import Controller

    raw = {"backend": {"type": "fake"}, "max": 1, "min_ready": 1, "poll_interval": 0.01}
    cfg = parse_config({"store": url, "pools": {"p": raw}}, env={})
    fake = FakeBackend(validate_options("fake", {"seed": 7}), pool="p")
    a = await Controller.create(cfg, backends={"p": fake}, tick=120.0)
    await a.start()
    b = await Controller.create(cfg, backends={"p": fake}, recover=False, tick=120.0)
    await b.start()
    ready_at: dict[str, float] = {}
    lat: list[float] = []
    try:
        async with a.events.subscribe(["vm"]) as events:

            async def note_ready() -> None:
                while True:
                    event = await events.get()
                    if event.state == "ready":
                        ready_at[event.id] = time.time()

            noter = asyncio.create_task(note_ready())
            held = await b.wait_ticket((await b.create_ticket(owner="w", pool="p")).id, 60)
            for _ in range(rounds):
                nxt = await b.create_ticket(owner="w", pool="p")
                await b.close_ticket(held.id)
                held = await b.wait_ticket(nxt.id, 60)
                t1 = time.time()
                assert held.vm is not None
                lat.append(t1 - ready_at[held.vm])
            noter.cancel()
    finally:
        await b.stop()
        await a.stop()
    return lat


async def tasks_rate(url: str, distributed: bool, n: int, concurrency: int) -> float:
    """Durable tasks/s on PostgreSQL, each task holding ``vm/<i>`` exclusively over two jobs,
    with the locks in PostgreSQL (``PgLockManager``) or in-process (``LockManager``).

    The tasks, their jobs and recovery pushes go to the store (durable commits either way);
    with distributed locks each task also makes one acquire (durable: a grant) and one
    release on the lock manager's connection, shared with the other tasks' in one batch.
    """
    from corral.locks import LockManager
    from corral.locks.pg import PgLockManager
    from corral.store import open_store
    from corral.tasks import Step, TaskEngine, TaskState

    store = await open_store(url)
    locks: LockManager | PgLockManager = LockManager()
    if distributed:
        locks = await PgLockManager(url, host_id=f"bench-tasks-{os.getpid()}", lease=30.0).start()
    engine = TaskEngine(store, locks, _REGISTRY, max_running=64)
    await engine.start()
    gate = asyncio.Semaphore(concurrency)
    jobs = [Step("bench.cluster.job", {"i": 0}), Step("bench.cluster.job", {"i": 1})]

    async def one(i: int) -> None:
        async with gate:
            task = await engine.submit("bench", jobs=jobs, locks={f"vm/t{i}": "exclusive"})
            info = await engine.wait(task)
            assert info.state is TaskState.FINISHED, info

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    elapsed = time.perf_counter() - start
    await engine.close()
    if isinstance(locks, PgLockManager):
        await locks.close()
    await store.close()
    return n / elapsed


SCALE_CONFIG = """\
store: {store}
cluster:
  lease: 5
pools:
  resalloc:
    backend:
      type: script
      new: [sh, -c, "sleep 0.1; echo 127.0.0.1"]
      delete: ["true"]
    max: 50
    max_starting: 50
    min_ready: 20
    poll_interval: 0.01
    ticket_ttl: null
"""

SCALE_CLIENT = """\
import sys, time
import httpx
url, count = sys.argv[1], int(sys.argv[2])
with httpx.Client(base_url=url, timeout=60) as http:
    for _ in range(count):
        ticket = http.post("/v1/tickets", json={"pool": "resalloc"}, params={"wait": 30}).json()
        while ticket["state"] == "waiting":
            ticket = http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 30}).json()
        if ticket["state"] != "assigned":
            raise SystemExit(f"ticket ended {ticket['state']}: {ticket}")
        http.post(f"/v1/tickets/{ticket['id']}/close").raise_for_status()
"""
"""One client process of the scale-out row: create -> long-poll -> close, nothing else."""


@dataclass(frozen=True, slots=True)
class ScaleRun:
    """One run of the scale-out row: its rate and where the CPU went during the timed window
    (seconds of user + system time, read from ``/proc``; 10 ms resolution per process)."""

    tickets: int
    rate: float
    hosts: tuple[float, ...]
    """Each ``corral serve`` process's own CPU."""
    scripts: float
    """The hosts' reaped children (the script backend's ``sh -c sleep 0.1``, ``true``)."""
    clients: float
    """The client processes (the same work for 1, 2 and 3 hosts)."""
    database: float
    """The PostgreSQL backends connected to the scratch database (the ones alive at the end)."""
    wait: tuple[float, float]
    """p50 and p90 of a ticket's wait for its VM (``assigned_at - created_at``), in ms."""

    def per_ticket(self, seconds: float) -> float:
        """``seconds`` of CPU per ticket, in ms."""
        return seconds / self.tickets * 1000


def _proc_cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of process ``pid``; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    # fields[0] is the state (stat's field 3): utime, stime, cutime, cstime are 14-17
    own = (int(fields[11]) + int(fields[12])) / tick
    return own, (int(fields[13]) + int(fields[14])) / tick


def _db_backends(admin: str, name: str) -> list[int]:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (name,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def _ticket_waits(url: str) -> tuple[float, float]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.9]) WITHIN GROUP (ORDER BY assigned_at - "
            "created_at) FROM tickets WHERE assigned_at IS NOT NULL"
        ).fetchone()
    p50, p90 = row[0] if row and row[0] else (0.0, 0.0)
    return p50 * 1000, p90 * 1000


def scale_out(
    admin: str,
    hosts: int,
    clients: int = 10,
    per_client: int = 20,
    on_start: Callable[[list[int]], None] | None = None,
) -> ScaleRun:
    """The resalloc workload of issue 4 (script backend, ``sleep 0.1`` spawns, no reuse, max
    50, min_ready 20; 10 client processes x 20 tickets closed once assigned) through
    ``corral serve`` on ``hosts`` hosts sharing a fresh PostgreSQL database, client ``i``
    talking to host ``i % hosts``: tickets/s from before the first client starts to the last
    one's end, and the CPU of every party in that window. Every host is a separate process
    on this machine. ``on_start(host_pids)`` is called right before the clients start (a
    profiler attaches there)."""
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    import httpx

    from corral.api.server import free_port

    name, url = _scratch_db(admin)
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "corral.yaml"
        config.write_text(SCALE_CONFIG.format(store=url))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        urls = []
        try:
            for i in range(hosts):
                port = free_port()
                urls.append(f"http://127.0.0.1:{port}")
                argv = [sys.executable, "-m", "corral", "serve", "--config", str(config)]
                argv += ["--port", str(port), "--log-level", "warning"]
                host_env = {**env, "CORRAL_CLUSTER_HOST_ID": f"s{i}"}
                log = (Path(tmp) / f"s{i}.log").open("w")
                procs.append(subprocess.Popen(argv, env=host_env, stdout=log, stderr=log))
            deadline = time.monotonic() + 120
            for u in urls:  # every host answers and the pool has its 20 ready VMs
                with httpx.Client(base_url=u, timeout=5) as http:
                    while True:
                        try:
                            vms = http.get("/v1/pools/resalloc").json().get("vms")
                            if isinstance(vms, dict) and int(vms.get("ready", 0)) >= 20:
                                break
                        except (httpx.HTTPError, ValueError):
                            pass
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{u}: no 20 ready VMs within 120 s")
                        time.sleep(0.05)
            if on_start is not None:
                on_start([p.pid for p in procs])
            backends = _db_backends(admin, name)
            before = {p.pid: _proc_cpu(p.pid) for p in procs}
            db_before = {pid: _proc_cpu(pid)[0] for pid in backends}
            start = time.perf_counter()
            workers = [
                subprocess.Popen(
                    [sys.executable, "-c", SCALE_CLIENT, urls[i % hosts], str(per_client)],
                    env=env,
                )
                for i in range(clients)
            ]
            clients_cpu = 0.0
            for w in workers:
                _, status, usage = os.wait4(w.pid, 0)
                w.returncode = os.waitstatus_to_exitcode(status)
                clients_cpu += usage.ru_utime + usage.ru_stime
            elapsed = time.perf_counter() - start
            after = {p.pid: _proc_cpu(p.pid) for p in procs}
            db_cpu = sum(
                _proc_cpu(pid)[0] - db_before.get(pid, 0.0) for pid in _db_backends(admin, name)
            )
            if any(w.returncode for w in workers):
                raise SystemExit("a scale-out client failed")
            tickets = clients * per_client
            return ScaleRun(
                tickets=tickets,
                rate=tickets / elapsed,
                hosts=tuple(after[p.pid][0] - before[p.pid][0] for p in procs),
                scripts=sum(after[p.pid][1] - before[p.pid][1] for p in procs),
                clients=clients_cpu,
                database=db_cpu,
                wait=_ticket_waits(url),
            )
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
            _drop_db(admin, name)


def _registry() -> Any:
    from corral.tasks import JobContext, StepRegistry
    from corral.types import JSON

    registry = StepRegistry()

    @registry.job("bench.cluster.job")
    async def job(ctx: JobContext, *, i: int) -> JSON:
        await ctx.push_recovery("bench.cluster.undo", i=i)
        return i

    @registry.recovery("bench.cluster.undo")
    async def undo(ctx: JobContext, *, i: int) -> JSON:
        return None

    return registry


_REGISTRY = _registry()


def commit_costs(url: str, rounds: int = 300) -> tuple[float, float]:
    """Median seconds of one durable and one lazy (``synchronous_commit = off``) one-row
    commit, each a round trip: what bounds a client that waits for every durable grant."""
    import psycopg

    out = []
    # a regular table: PostgreSQL writes no WAL for a TEMP one, so its commits cost no flush
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_commit_cost")
        conn.execute("CREATE TABLE bench_commit_cost (k int PRIMARY KEY, n bigint)")
        try:
            conn.execute("INSERT INTO bench_commit_cost VALUES (1, 0)")
            for sync in ("on", "off"):
                conn.execute(f"SET synchronous_commit = {sync}")
                lat = []
                for _ in range(rounds):
                    t0 = time.perf_counter()
                    conn.execute("UPDATE bench_commit_cost SET n = n + 1 WHERE k = 1")
                    lat.append(time.perf_counter() - t0)
                out.append(statistics.median(lat))
        finally:
            conn.execute("DROP TABLE bench_commit_cost")
    return out[0], out[1]


def _pcts(lat: list[float]) -> tuple[float, float]:
    lat = sorted(lat)
    return lat[len(lat) // 2] * 1000, lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000


def _scratch_db(admin: str) -> tuple[str, str]:
    import psycopg

    from corral.store import migrate

    name = f"corral_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = urlsplit(admin)._replace(path=f"/{name}").geturl()
    migrate.upgrade(url)
    return name, url


def _drop_db(admin: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg", default="postgresql://root@127.0.0.1:5432/test")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--quick", action="store_true", help="one run of 1.5 s per figure")
    parser.add_argument(
        "--rows",
        default=",".join(ROWS),
        help=f"comma-separated rows to measure (default all): {', '.join(ROWS)}",
    )
    parser.add_argument(
        "--targets",
        default=",".join(TARGETS),
        help=f"lock rows: which implementations (default all): {', '.join(TARGETS)}",
    )
    args = parser.parse_args()
    rows = _choice(args.rows, ROWS, "--rows")
    chosen = _choice(args.targets, TARGETS, "--targets")
    runs, seconds = (1, 1.5) if args.quick else (args.runs, args.seconds)
    table, tokens_ok, costs, tasks, lat, wake = _measure(args, rows, chosen, runs, seconds)
    scale: dict[int, list[ScaleRun]] = {1: [], 2: [], 3: []}
    for _ in range(runs if "scale" in rows else 0):
        for hosts in scale:  # interleaved: the load moves during the run
            scale[hosts].append(scale_out(args.pg, hosts))
    if table:
        _print_locks(table, runs, seconds, tokens_ok)
    if "commit" in rows:
        durable, lazy = costs
        print(
            f"one-row commit round trip: durable {durable * 1000:.2f} ms, lazy "
            f"{lazy * 1000:.2f} ms -> a client waiting for each durable grant does at most "
            f"{1 / durable:,.0f} pairs/s"
        )
    if tasks[False]:
        _print_tasks(tasks, runs)
    if lat:
        p50, p99 = _pcts(lat)
        print(
            f"lock hand-over across processes (release -> NOTIFY -> grant): p50 {p50:.2f} ms, "
            f"p99 {p99:.2f} ms over {len(lat)} hand-overs"
        )
    if wake:
        p50, p99 = _pcts(wake)
        print(
            f"cross-host wake-up (VM ready on host A -> the ticket waiting on host B assigned, "
            f"its long-poll answered): p50 {p50:.2f} ms, p99 {p99:.2f} ms over {len(wake)} "
            f"(target p50 <= 10 ms)"
        )
    if scale[1]:
        _print_scale(scale, runs)


def _measure(
    args: argparse.Namespace, rows: list[str], chosen: list[str], runs: int, seconds: float
) -> tuple[
    dict[str, dict[str, float]],
    bool,
    tuple[float, float],
    dict[bool, list[float]],
    list[float],
    list[float],
]:
    """The rows measured on one scratch database (every row but scale-out)."""
    name, url = _scratch_db(args.pg)
    table: dict[str, dict[str, float]] = {}
    tokens_ok = True
    costs = (0.0, 0.0)
    tasks: dict[bool, list[float]] = {False: [], True: []}
    lat: list[float] = []
    wake: list[float] = []
    try:
        targets = {"corral-pg": ("corral", url), "tooz-pg": ("tooz", args.pg)}
        targets["tooz-redis"] = ("tooz", args.redis)
        for label, (kind, target) in targets.items():
            if "locks" not in rows or label not in chosen:
                continue
            row = table.setdefault(label, {})
            for procs, column in [(1, "uncontended"), (4, "4 processes")]:
                figures = []
                for _ in range(runs):
                    rate, ok = measure(kind, target, procs, seconds)
                    figures.append(rate)
                    tokens_ok = tokens_ok and ok
                row[column] = statistics.median(figures)
        if "commit" in rows:
            costs = commit_costs(url)
        for _ in range(runs if "tasks" in rows else 0):
            for distributed in (False, True):  # interleaved: the load moves during the run
                rate = asyncio.run(tasks_rate(url, distributed, 300, 64))
                tasks[distributed].append(rate)
        if "handover" in rows:
            lat = asyncio.run(handover(url, 60 if args.quick else 200))
        if "wakeup" in rows:
            wake = asyncio.run(wakeup(url, 50 if args.quick else 200))
    finally:
        _drop_db(args.pg, name)
    return table, tokens_ok, costs, tasks, lat, wake


ROWS = ("locks", "commit", "tasks", "handover", "wakeup", "scale")
TARGETS = ("corral-pg", "tooz-pg", "tooz-redis")


def _choice(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    chosen = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in chosen if t not in allowed]
    if unknown or not chosen:
        raise SystemExit(f"{option}: unknown {unknown or text!r}; choose from {', '.join(allowed)}")
    return chosen


def _print_locks(
    table: dict[str, dict[str, float]], runs: int, seconds: float, tokens_ok: bool
) -> None:
    load = os.getloadavg()[0]
    print(f"exclusive acquire+release pairs/s, median of {runs} x {seconds}s (load {load:.1f})")
    print(f"{'':12} {'uncontended':>12} {'4 processes':>12} {'x tooz-pg':>10}")
    base = table.get("tooz-pg")
    for label, row in table.items():
        ratio = row["4 processes"] / base["4 processes"] if base else 0.0
        print(f"{label:12} {row['uncontended']:12,.0f} {row['4 processes']:12,.0f} {ratio:9.1f}x")
    if base and "corral-pg" in table:
        for column in ["uncontended", "4 processes"]:
            print(f"corral-pg / tooz-pg {column}: {table['corral-pg'][column] / base[column]:.1f}x")
    if "corral-pg" in table:
        print(f"corral fencing tokens distinct and increasing per process: {tokens_ok}")


def _print_tasks(tasks: dict[bool, list[float]], runs: int) -> None:
    in_proc, dist = (statistics.median(tasks[d]) for d in (False, True))
    print(
        f"durable tasks/s on PostgreSQL (300 tasks, 64 in flight, vm/<i> locked, median of "
        f"{runs}): in-process locks {in_proc:,.0f}, PgLockManager {dist:,.0f} "
        f"({dist / in_proc:.2f}x; target >= 0.8x); runs {[round(x) for x in tasks[False]]} / "
        f"{[round(x) for x in tasks[True]]} (load {os.getloadavg()[0]:.1f})"
    )


def _print_scale(scale: dict[int, list[ScaleRun]], runs: int) -> None:
    one = statistics.median(r.rate for r in scale[1])
    cells = ", ".join(
        f"{h} host{'s' if h > 1 else ''} {statistics.median(r.rate for r in rs):.0f} "
        f"({statistics.median(r.rate for r in rs) / one:.2f}x)"
        for h, rs in scale.items()
    )
    print(
        f"scale-out, resalloc workload through corral serve on PostgreSQL (10 clients x 20, "
        f"clients spread over the hosts, median of {runs}): tickets/s {cells}; target >= 0.8x "
        f"of one host; runs {[[round(r.rate) for r in rs] for rs in scale.values()]} "
        f"(load {os.getloadavg()[0]:.1f})"
    )
    print(
        "scale-out CPU per ticket (ms, median of the runs): hosts (each) | scripts | clients | db"
    )
    for h, rs in scale.items():
        med = statistics.median
        each = " + ".join(f"{med(r.per_ticket(r.hosts[i]) for r in rs):.2f}" for i in range(h))
        total = med(r.per_ticket(sum(r.hosts)) for r in rs)
        print(
            f"  {h} host{'s' if h > 1 else ' '}  hosts {total:5.2f}"
            f" ({each}) | scripts {med(r.per_ticket(r.scripts) for r in rs):.2f}"
            f" | clients {med(r.per_ticket(r.clients) for r in rs):.2f}"
            f" | db {med(r.per_ticket(r.database) for r in rs):.2f}"
            f"; ticket wait p50/p90 {med(r.wait[0] for r in rs):.0f}/"
            f"{med(r.wait[1] for r in rs):.0f} ms"
        )


if __name__ == "__main__":
    main()
