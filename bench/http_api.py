"""Benchmark of corral through its HTTP API, like for like with resalloc's figures (issue 14).

The workload is the one users run: a client creates a ticket, long-polls it
(``POST /v1/tickets?wait=``, then ``GET /v1/tickets/{id}?wait=`` while it waits) and closes it;
``corral serve`` in a subprocess; the script backend (``new`` = ``sleep 0.1; echo 127.0.0.1``,
``delete`` = ``true``); no reuse; pool ``max 50, max_starting 50, min_ready 20``. Every part runs
on SQLite and on PostgreSQL, printed side by side:

1. server start: ``corral serve`` (schema already current) to ``/healthz``, and to 20 ready VMs;
   idle RSS once the pool is full, peak RSS (VmHWM) at the end of the run;
2. warm sequential: one client, create -> assigned p50/p99 (targets 5 / 25 ms);
3. 10 client processes x 20 tickets, the clock started *before* the 10 processes are started
   (their interpreter start and imports included, as a user's would be): tickets/s, latency
   p50/p90/max (target max <= 1 s), and the ratio to the in-process figure of the same workload
   measured in the same run by ``bench/pools.py``'s code (target >= 0.6); each process runs
   corral's own client library (``--client httpx``: bare httpx instead);
4. CLI start-up: ``corral --version`` and ``corral tickets`` against the running server (target
   <= 300 ms wall), beside the bare interpreter's start.

Times of processes are printed as wall time and as CPU time (user + system) of the process: on a
machine shared with other work the wall time mostly measures the others, while the CPU time
stays close to what the process costs. Python's bytecode cache is on for every process started
(in a temporary ``PYTHONPYCACHEPREFIX``, warmed by an unmeasured first start of the server, of a
client and of each command), as in an installed corral: an environment with
``PYTHONDONTWRITEBYTECODE=1`` would otherwise compile corral's sources at every start.

resalloc is not on PyPI, so it is not run here: its figures are printed as recorded on this
machine class on 2026-12-02, interleaved with corral in one run, and every line says so.

Run: ``python bench/http_api.py`` (``--quick`` for a short run; ``--stores sqlite`` to skip
PostgreSQL; the PostgreSQL server is ``$CORRAL_TEST_PG_URL``, default
``postgresql://root@127.0.0.1:5432/test``, in which a scratch database is created and dropped).

Named ``http_api.py`` rather than ``http.py``: a script called ``http.py`` in ``bench/`` shadows
the standard library's ``http`` package for every benchmark run from that folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import pools as pools_bench  # noqa: E402  (bench/pools.py: the in-process workload, stores)

from corral.api.server import free_port  # noqa: E402

MIB = 1024 * 1024

WARM_TARGET_P50 = 0.005
WARM_TARGET_P99 = 0.025
LOAD_TARGET_RATIO = 0.6
LOAD_TARGET_MAX = 1.0
CLI_TARGET = 0.300
RSS_TARGET = 1.2 * 60 * MIB

RESALLOC = {
    "date": "2026-12-02",
    "warm_p50": 0.134,
    "load_rate": 6.9,
    "load_max": 2.4,
    "faster_day": "warm p50 43 ms, 11-26 tickets/s",
    "cli": (0.065, 0.085),
    "healthz": 1.2,
    "ready20": 2.0,
    "rss": 59 * MIB,
}
"""resalloc v6.3 on this machine class, interleaved with corral in one run (issue 14)."""

RECORDED = f"resalloc: recorded {RESALLOC['date']}, not measured"

POOL = "resalloc"

CONFIG = """\
store: {store}
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

CLIENT = """\
import json, sys, time
import httpx
url, pool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
latencies = []
with httpx.Client(base_url=url, timeout=60) as http:
    for _ in range(count):
        start = time.perf_counter()
        ticket = http.post("/v1/tickets", json={"pool": pool}, params={"wait": 30}).json()
        while ticket["state"] == "waiting":
            if time.perf_counter() - start > 120:
                raise SystemExit(f"ticket {ticket['id']} still waiting after 120 s")
            ticket = http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 30}).json()
        latencies.append(time.perf_counter() - start)
        if ticket["state"] != "assigned":
            raise SystemExit(f"ticket ended {ticket['state']}: {ticket}")
        http.post(f"/v1/tickets/{ticket['id']}/close").raise_for_status()
print(json.dumps(latencies))
"""
"""One client process (``--client httpx``): the create -> long-poll -> close loop, with nothing
but httpx imported.

A bare ``import httpx`` also imports httpx's own command line tool (``httpx._main``: click,
pygments, rich) when they are installed, and ``httpx.Client`` loads the certificate authorities'
bundle even for an ``http://`` URL: about half of such a process's instructions (issue 14).
"""

CORRAL_CLIENT = """\
import json, sys, time
from corral.client import Client
url, pool, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
latencies = []
with Client(url, timeout=60) as corral:
    for _ in range(count):
        start = time.perf_counter()
        ticket = corral.create_ticket(pool=pool, wait=30)
        while ticket.state == "waiting":
            if time.perf_counter() - start > 120:
                raise SystemExit(f"ticket {ticket.id} still waiting after 120 s")
            ticket = corral.get_ticket(ticket.id, wait=30)
        latencies.append(time.perf_counter() - start)
        if ticket.state != "assigned":
            raise SystemExit(f"ticket ended {ticket.state}: {ticket}")
        corral.close_ticket(ticket.id)
print(json.dumps(latencies))
"""
"""The same loop through corral's own client library (``--client corral``, the default): what a
Python program using corral runs, its import included (the standard library's HTTP/1.1 over one
kept-alive connection, the answers read into records without pydantic; issue 14)."""

CLIENTS = {"httpx": CLIENT, "corral": CORRAL_CLIENT}


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), nearest-rank on the sorted values."""
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _memory(pid: int, key: str) -> int:
    """``VmRSS`` or ``VmHWM`` of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} for process {pid}")


PYCACHE = tempfile.mkdtemp(prefix="corral-bench-pycache-")
"""Bytecode cache of the processes the bench starts (removed at the end)."""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = PYCACHE
    return env


def _cpu(pid: int) -> float:
    """CPU time (user + system) used so far by a running process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    """A running ``corral serve`` and what its start-up measured."""

    url: str
    pid: int
    to_healthz: float
    to_ready: float
    cpu_healthz: float = 0.0
    cpu_ready: float = 0.0
    idle_rss: int = 0


@contextmanager
def serve(store: str, workdir: Path) -> Iterator[Server]:
    """``corral serve`` on a free port with the schema already current; yields once 20 VMs are
    ready, with the times from the process's start to ``/healthz`` and to 20 ready."""
    config = workdir / "corral.yaml"
    config.write_text(CONFIG.format(store=store))
    # Migrate first (not timed): the start measured is a restart on a current schema.
    subprocess.run(
        [sys.executable, "-m", "corral", "db", "upgrade", "--config", str(config)],
        cwd=workdir,
        env=_env(),
        check=True,
        capture_output=True,
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (workdir / "serve.log").open("w")
    argv = [sys.executable, "-m", "corral", "serve", "--config", str(config)]
    argv += ["--port", str(port), "--log-level", "warning"]
    start = time.perf_counter()
    process = subprocess.Popen(argv, cwd=workdir, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            to_healthz = _until(process, workdir, lambda: _healthy(http)) - start
            cpu_healthz = _cpu(process.pid)
            to_ready = _until(process, workdir, lambda: _ready(http) >= 20) - start
            server = Server(url=url, pid=process.pid, to_healthz=to_healthz, to_ready=to_ready)
            server.cpu_healthz, server.cpu_ready = cpu_healthz, _cpu(process.pid)
            time.sleep(1.0)  # the replacement spawns settle; then it idles
            server.idle_rss = _memory(process.pid, "VmRSS")
        yield server
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _until(process: subprocess.Popen[bytes], workdir: Path, check: object) -> float:
    """Poll ``check`` every 5 ms until true; the time it first was."""
    assert callable(check)
    deadline = time.monotonic() + 60
    while not check():
        if process.poll() is not None:
            raise SystemExit(f"corral serve exited: {(workdir / 'serve.log').read_text()}")
        if time.monotonic() > deadline:
            raise SystemExit("corral serve did not get there within 60 s")
        time.sleep(0.005)
    return time.perf_counter()


def _healthy(http: httpx.Client) -> bool:
    try:
        return http.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def _ready(http: httpx.Client) -> int:
    body = http.get(f"/v1/pools/{POOL}").json()
    vms = body.get("vms")  # absent while the server is still recovering (server_starting)
    return int(vms.get("ready", 0)) if isinstance(vms, dict) else 0


STUCK = 120
"""A ticket still waiting after this many seconds ends the bench (a hang is a finding, not a
figure)."""


def _pool(http: httpx.Client) -> object:
    body = http.get(f"/v1/pools/{POOL}").json()
    return {key: body.get(key) for key in ("vms", "waiting_tickets", "stats")}


def _wait_ready(url: str, count: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as http:
        deadline = time.monotonic() + 60
        while _ready(http) < count:
            if time.monotonic() > deadline:
                raise SystemExit(f"pool did not get back to {count} ready VMs")
            time.sleep(0.02)


def warm_sequential(url: str, n: int) -> list[float]:
    """create -> assigned of ``n`` sequential tickets by one client (after 20 of warm-up)."""
    latencies: list[float] = []
    with httpx.Client(base_url=url, timeout=60) as http:
        for i in range(n + 20):
            start = time.perf_counter()
            ticket = http.post("/v1/tickets", json={"pool": POOL}, params={"wait": 30}).json()
            while ticket["state"] == "waiting":
                if time.perf_counter() - start > STUCK:
                    raise SystemExit(
                        f"ticket {ticket['id']} still waiting after {STUCK} s: {_pool(http)}"
                    )
                ticket = http.get(f"/v1/tickets/{ticket['id']}", params={"wait": 30}).json()
            if i >= 20:
                latencies.append(time.perf_counter() - start)
            http.post(f"/v1/tickets/{ticket['id']}/close").raise_for_status()
    return latencies


def load(
    url: str, clients: int, per_client: int, client: str = "corral"
) -> tuple[float, list[float], float]:
    """``clients`` processes x ``per_client`` tickets, each process running :data:`CLIENTS`'s
    ``client``; (elapsed from before the first process starts to the last one's end, every
    latency, the CPU time the client processes used)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLIENTS[client], url, POOL, str(per_client)],
            stdout=subprocess.PIPE,
            env=_env(),
        )
        for _ in range(clients)
    ]
    outputs = [proc.communicate(timeout=300)[0] for proc in procs]
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if any(proc.returncode for proc in procs):
        raise SystemExit("a client process failed")
    return elapsed, [lat for out in outputs for lat in json.loads(out)], cpu


def in_process_rate(store: str) -> float:
    """tickets/s of the same workload in-process (bench/pools.py's code, same store kind)."""
    rate, *_ = asyncio.run(pools_bench.resalloc_workload(store))
    return float(rate)


def _corral_command() -> str:
    """The ``corral`` command of this interpreter's environment (beside ``sys.executable``), else
    the one on ``PATH``: a bench run as ``venv/bin/python`` without activating the venv."""
    beside = Path(sys.executable).with_name("corral")
    return str(beside) if beside.exists() else shutil.which("corral") or "corral"


def wall(argv: list[str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of ``runs`` runs of ``argv``
    (output discarded), after one run that warms the bytecode cache."""
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    times, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, env=_env()
        )
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times), statistics.median(cpus)


@dataclass
class Figures:
    """One store's figures."""

    healthz: float = 0.0
    ready: float = 0.0
    cpu_healthz: float = 0.0
    cpu_ready: float = 0.0
    idle_rss: int = 0
    peak_rss: int = 0
    warm_p50: float = 0.0
    warm_p99: float = 0.0
    rate: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    worst: float = 0.0
    in_process: float = 0.0
    elapsed: float = 0.0
    clients_cpu: float = 0.0
    server_cpu: float = 0.0
    per_client: int = 20
    cli: dict[str, tuple[float, float]] = field(default_factory=dict)


IMPORT_STEPS = (
    ("the interpreter", ""),
    ("+ the CLI (typer, rich, httpx, pydantic, the client)", "corral.cli.main"),
    ("+ the web stack (FastAPI, Starlette, uvicorn)", "fastapi,starlette.applications,uvicorn"),
    ("+ SQLAlchemy and the SQL store", "sqlalchemy,corral.store.sql"),
    ("+ the server (API, UI, metrics, controller, backends)", "corral.api.server,corral.api.app"),
)
"""What ``corral serve`` imports, in the order it does, grouped: each step's RSS and CPU time."""

PROBE = """\
import importlib, resource, sys
from corral.cli.entry import skip_httpx_cli
skip_httpx_cli()
for names in sys.argv[1:]:
    for name in filter(None, names.split(",")):
        importlib.import_module(name)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:"))
    print(rss * 1024, usage.ru_utime + usage.ru_stime)
"""


def import_costs() -> list[tuple[str, int, float]]:
    """(step, RSS after it, CPU time after it) for :data:`IMPORT_STEPS`, in one fresh process
    (the bytecode cache warm)."""
    argv = [sys.executable, "-c", PROBE, *(names for _, names in IMPORT_STEPS)]
    subprocess.run(argv, capture_output=True, env=_env(), check=True)  # warms the cache
    done = subprocess.run(argv, capture_output=True, text=True, env=_env(), check=True)
    rows = [line.split() for line in done.stdout.splitlines()]
    return [
        (label, int(rss), float(cpu))
        for (label, _), (rss, cpu) in zip(IMPORT_STEPS, rows, strict=True)
    ]


def run_store(
    kind: str, warm: int, per_client: int, cli_runs: int, client: str = "corral"
) -> Figures:
    """Every part on one store kind."""
    figures = Figures()
    with (
        pools_bench.store_url(kind) as store,
        tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp,
        serve(store, Path(tmp)) as server,
    ):
        load(server.url, 1, 1, client)  # not measured: warms the bytecode and page caches
    with (
        pools_bench.store_url(kind) as store,
        tempfile.TemporaryDirectory(prefix="corral-bench-") as tmp,
    ):
        with serve(store, Path(tmp)) as server:
            figures.healthz, figures.ready = server.to_healthz, server.to_ready
            figures.cpu_healthz, figures.cpu_ready = server.cpu_healthz, server.cpu_ready
            figures.idle_rss = server.idle_rss
            samples = warm_sequential(server.url, warm)
            figures.warm_p50, figures.warm_p99 = percentile(samples, 50), percentile(samples, 99)
            _wait_ready(server.url, 20)
            server_cpu = _cpu(server.pid)
            figures.per_client = per_client
            elapsed, latencies, figures.clients_cpu = load(server.url, 10, per_client, client)
            figures.server_cpu = _cpu(server.pid) - server_cpu
            figures.elapsed = elapsed
            figures.rate = len(latencies) / elapsed
            figures.p50, figures.p90 = percentile(latencies, 50), percentile(latencies, 90)
            figures.worst = max(latencies)
            corral = _corral_command()
            figures.cli["--version"] = wall([corral, "--version"], cli_runs)
            figures.cli["tickets"] = wall([corral, "tickets", "--url", server.url], cli_runs)
            figures.peak_rss = _memory(server.pid, "VmHWM")
    figures.in_process = in_process_rate(kind)
    return figures


def _row(label: str, cells: list[str], note: str) -> None:
    print(f"  {label:<34}" + "".join(f"{c:>19}" for c in cells) + f"   {note}")


def report(stores: list[str], results: dict[str, Figures], bare: tuple[float, float]) -> None:
    """The side-by-side table."""
    f = [results[s] for s in stores]
    ms = "{:.0f} ms".format
    print()
    _row("", stores, "target / reference")
    _row(
        "start -> /healthz",
        [f"{x.healthz:.2f} s" for x in f],
        f"< {RESALLOC['healthz']} s ({RECORDED})",
    )
    _row(
        "start -> 20 ready",
        [f"{x.ready:.2f} s" for x in f],
        f"< {RESALLOC['ready20']} s ({RECORDED})",
    )
    _row(
        "  CPU time used to /healthz, 20 ready",
        [f"{x.cpu_healthz:.2f} / {x.cpu_ready:.2f} s" for x in f],
        "the server's user + system time (what the wall time costs on an idle machine)",
    )
    _row(
        "idle RSS",
        [f"{x.idle_rss / MIB:.0f} MiB" for x in f],
        f"<= {RSS_TARGET / MIB:.0f} MiB = 1.2 x resalloc's ~60 ({RECORDED})",
    )
    _row("peak RSS (VmHWM)", [f"{x.peak_rss / MIB:.0f} MiB" for x in f], "reported")
    _row(
        "warm sequential p50",
        [f"{x.warm_p50 * 1000:.1f} ms" for x in f],
        f"<= {WARM_TARGET_P50 * 1000:.0f} ms ({RECORDED}: {RESALLOC['warm_p50'] * 1000:.0f} ms "
        "polling every 10 ms)",
    )
    _row(
        "warm sequential p99",
        [f"{x.warm_p99 * 1000:.1f} ms" for x in f],
        f"<= {WARM_TARGET_P99 * 1000:.0f} ms",
    )
    _row(
        f"10 clients x {f[0].per_client}: tickets/s",
        [f"{x.rate:.0f}/s" for x in f],
        f"({RECORDED}: {RESALLOC['load_rate']}/s polling every 200 ms; on a faster day "
        f"{RESALLOC['faster_day']})",
    )
    _row(
        "  in-process, same run", [f"{x.in_process:.0f}/s" for x in f], "bench/pools.py's workload"
    )
    _row(
        "  HTTP / in-process",
        [f"{x.rate / x.in_process:.2f}" for x in f],
        f">= {LOAD_TARGET_RATIO}",
    )
    _row(
        "  elapsed; CPU of clients, server",
        [f"{x.elapsed:.1f}; {x.clients_cpu:.1f}, {x.server_cpu:.1f} s" for x in f],
        f"CPU seconds on {os.cpu_count()} cores shared with other work; the clients' include "
        "their interpreter start and imports",
    )
    _row("  latency p50 / p90", [f"{ms(x.p50 * 1000)} / {ms(x.p90 * 1000)}" for x in f], "")
    _row(
        "  latency max",
        [ms(x.worst * 1000) for x in f],
        f"<= {LOAD_TARGET_MAX * 1000:.0f} ms ({RECORDED}: {RESALLOC['load_max']} s)",
    )
    lo, hi = RESALLOC["cli"]
    for name in ("--version", "tickets"):
        _row(
            f"corral {name} (wall, median)",
            [ms(x.cli[name][0] * 1000) for x in f],
            f"<= {CLI_TARGET * 1000:.0f} ms (bare python {bare[0] * 1000:.0f} ms; {RECORDED}: "
            f"its CLI {lo * 1000:.0f}-{hi * 1000:.0f} ms)",
        )
        _row(
            "  CPU time (user + system, median)",
            [ms(x.cli[name][1] * 1000) for x in f],
            f"(bare python {bare[1] * 1000:.0f} ms)",
        )
    checks = [
        (
            x.healthz < RESALLOC["healthz"],
            x.ready < RESALLOC["ready20"],
            x.idle_rss <= RSS_TARGET,
            x.warm_p50 <= WARM_TARGET_P50,
            x.warm_p99 <= WARM_TARGET_P99,
            x.rate >= LOAD_TARGET_RATIO * x.in_process,
            x.worst <= LOAD_TARGET_MAX,
            *(v[0] <= CLI_TARGET for v in x.cli.values()),
        )
        for x in f
    ]
    for kind, ok in zip(stores, checks, strict=True):
        print(f"  {kind}: targets met {sum(ok)}/{len(ok)}")
    print("  where the idle RSS goes (what 'corral serve' imports, cumulative; CPU: start-up's):")
    costs = import_costs()
    for label, rss, cpu in costs:
        print(f"    {label:<58}{rss / MIB:6.0f} MiB {cpu * 1000:6.0f} ms CPU")
    for kind, x in zip(stores, f, strict=True):
        print(
            f"    + the running server on {kind} (pool, threads, caches): "
            f"{(x.idle_rss - costs[-1][1]) / MIB:.0f} MiB -> idle {x.idle_rss / MIB:.0f} MiB"
        )
    print(f"  load average at the end: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


def main() -> None:
    """Run every part on every store and print them side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    parser.add_argument("--warm", type=int, default=500, help="tickets in the warm part")
    parser.add_argument("--stores", default="sqlite,postgresql", help="comma-separated")
    parser.add_argument(
        "--client",
        choices=sorted(CLIENTS),
        default="corral",
        help="what the 10 client processes run: corral.client (default) or bare httpx",
    )
    args = parser.parse_args()
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    print(f"corral HTTP benchmark; load average at the start: {os.getloadavg()[0]:.2f}")
    print(f"reference figures for resalloc v6.3 are {RECORDED} (it is not on PyPI)")
    print(f"the 10 client processes run: {args.client}")
    bare = wall([sys.executable, "-c", "pass"], 10)
    results = {}
    for kind in stores:
        print(f"running on {kind}...", flush=True)
        results[kind] = run_store(
            kind,
            warm=100 if args.quick else args.warm,
            per_client=5 if args.quick else 20,
            cli_runs=3 if args.quick else 10,
            client=args.client,
        )
    report(stores, results, bare)
    shutil.rmtree(PYCACHE, ignore_errors=True)


if __name__ == "__main__":
    main()
