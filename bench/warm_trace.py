"""Where a warm sequential ticket's time goes over HTTP: timestamps along the chain (issue 14).

Runs ``bench/http_api.py``'s server (script backend ``sleep 0.1; echo 127.0.0.1``, pool max 50,
max_starting 50, min_ready 20, SQLite) with probes patched in, and one client doing the warm
sequential workload (``POST /v1/tickets?wait=30``, then the close). Every probe writes
``time.monotonic()`` (one clock for every process on Linux) to a trace file; the client stamps
its send and its read of each answer. For each ticket the steps are placed relative to the
client's send, and the median of every step over the tickets is printed:

client send -> socket read -> create entered -> insert queued/run/answered -> assignment round
(its read, its write) -> waiter woken -> answer written -> client read; then the close likewise.

The probes cost a few microseconds each; the figures are for finding the steps, not for the
targets (``bench/http_api.py`` measures those).

Run: ``python bench/warm_trace.py [--tickets 50]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

SERVE = """\
import functools, os, sys, threading, time

fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
mono = time.monotonic

def mark(name):
    os.write(fd, f"{mono():.7f} {name} {threading.current_thread().name}\\n".encode())

def around(cls, attr, name):
    fn = getattr(cls, attr)
    @functools.wraps(fn)
    async def probe(*args, **kwargs):
        mark(name + ">")
        try:
            return await fn(*args, **kwargs)
        finally:
            mark(name + "<")
    setattr(cls, attr, probe)

from corral.controller.tickets import Tickets
from corral.controller.assignment import Assigner
from corral.controller import controller as ctl_mod
from corral.store.sql import executor
from corral.api import httptools_protocol
from uvicorn.protocols.http import httptools_impl
from corral.backends import process

for attr in ("create", "wait", "close"):
    around(Tickets, attr, "tickets." + attr)
around(Assigner, "assign_once", "assign_once")
changed = Tickets.changed
def changed_probe(self, *a, **k):
    mark("changed")
    return changed(self, *a, **k)
Tickets.changed = changed_probe
kick = ctl_mod.Controller.kick_assign
def kick_probe(self):
    mark("kick_assign")
    return kick(self)
ctl_mod.Controller.kick_assign = kick_probe

units = iter(range(1, 1 << 62))
def unit(kind):
    fn = getattr(executor.SqlExecutor, kind)
    async def probe(self, work):
        n = next(units)
        def inner(conn):
            mark(f"store.{kind}.run>#{n}")
            try:
                return work(conn)
            finally:
                mark(f"store.{kind}.run<#{n}")
        f = sys._getframe(1)
        mark(f"store.{kind}>#{n} {f.f_code.co_name}<-{f.f_back.f_code.co_name if f.f_back else ''}")
        try:
            return await fn(self, inner)
        finally:
            mark(f"store.{kind}<#{n}")
    setattr(executor.SqlExecutor, kind, probe)
unit("run")
unit("read")
commit = executor._Lane.transaction
import contextlib
@contextlib.contextmanager
def transaction(self):
    with commit(self) as conn:
        yield conn
        mark("store.commit>")
    mark("store.commit<")
executor._Lane.transaction = transaction

received = httptools_protocol.LimitedHttpToolsProtocol.data_received
def data_received(self, data):
    mark("recv")
    return received(self, data)
httptools_protocol.LimitedHttpToolsProtocol.data_received = data_received
send = httptools_impl.RequestResponseCycle.send
async def send_probe(self, message):
    await send(self, message)
    if message["type"] == "http.response.body" and not message.get("more_body"):
        mark("sent")
httptools_impl.RequestResponseCycle.send = send_probe
popen = process._popen
def popen_probe(*a, **k):
    mark("popen>")
    try:
        return popen(*a, **k)
    finally:
        mark("popen<")
process._popen = popen_probe

sys.argv = ["corral", *sys.argv[2:]]
from corral.cli.entry import main
main()
"""

Event = tuple[float, str, str]
"""(monotonic time, probe name, thread name)."""


def _find(
    events: list[Event], name: str, start: float, end: float = float("inf"), by: str = ""
) -> Event:
    """The first event called ``name`` (or ``name#...``) within ``[start, end]`` (a store unit:
    queued by the store method ``by``, when given)."""
    for event in events:
        if start <= event[0] <= end and event[1].split("#")[0] == name and event[2].startswith(by):
            return event
    raise LookupError(f"{name} not seen in [{start}, {end}]")


def _last(events: list[Event], name: str, start: float, end: float) -> Event:
    """The last event called ``name`` within ``[start, end]``."""
    found = [e for e in events if start <= e[0] <= end and e[1].split("#")[0] == name]
    if not found:
        raise LookupError(f"{name} not seen in [{start}, {end}]")
    return found[-1]


def _unit(events: list[Event], queued: Event) -> tuple[float, float, float]:
    """A store unit's (start in its thread, end in its thread, answer on the loop)."""
    kind, _, n = queued[1].partition(">#")
    at = {e[1]: e[0] for e in events if e[1].endswith("#" + n)}
    return at[f"{kind}.run>#{n}"], at[f"{kind}.run<#{n}"], at[f"{kind}<#{n}"]


def create_steps(events: list[Event], t0: float, t1: float) -> dict[str, float]:
    """The steps of one create answered at once, each as a duration (s): the insert and the
    assignment in one store unit (``insert_ticket_assigning``), else in three."""
    recv = _find(events, "recv", t0, t1)[0]
    entered = _find(events, "tickets.create>", t0, t1)[0]
    try:
        one = _find(events, "store.run>", entered, t1, by="insert_ticket_assigning<")
    except LookupError:
        return _create_three(events, t0, t1, recv, entered)
    u_start, u_end, u_back = _unit(events, one)
    created = _find(events, "tickets.create<", u_back, t1)[0]
    sent = _find(events, "sent", created, t1)[0]
    return {
        "1 client send -> server read": recv - t0,
        "2 read -> create entered (HTTP, FastAPI)": entered - recv,
        "3 insert+assign unit: queue -> store thread": u_start - one[0],
        "4 insert+assign unit: SQL + commit in thread": u_end - u_start,
        "5 insert+assign unit: thread -> loop resumes": u_back - u_end,
        "6 loop resumes -> create returns (announce)": created - u_back,
        "7 create returns -> answer written": sent - created,
        "8 answer written -> client read": t1 - sent,
        "total (client)": t1 - t0,
    }


def _create_three(
    events: list[Event], t0: float, t1: float, recv: float, entered: float
) -> dict[str, float]:
    """A create whose insert, round's read and write are three store units."""
    insert = _find(events, "store.run>", entered, t1, by="insert_ticket<")
    i_start, i_end, i_back = _unit(events, insert)
    created = _find(events, "tickets.create<", i_back, t1)[0]
    changed = _find(events, "changed", created, t1)[0]
    round_ = _last(events, "assign_once>", i_back, changed)[0]
    read = _find(events, "store.read>", round_, changed, by="allocation_inputs<")
    r_start, r_end, r_back = _unit(events, read)
    write = _find(events, "store.run>", r_back, changed, by="assign<")
    w_start, w_end, w_back = _unit(events, write)
    woken = _find(events, "tickets.wait<", changed, t1)[0]
    sent = _find(events, "sent", woken, t1)[0]
    return {
        "1 client send -> server read": recv - t0,
        "2 read -> create entered (HTTP, FastAPI)": entered - recv,
        "3 insert: queue -> store thread": i_start - insert[0],
        "4 insert: SQL + commit in thread": i_end - i_start,
        "5 insert: thread -> loop resumes": i_back - i_end,
        "6 insert answered -> round starts": round_ - i_back,
        "7 round's read: queue -> thread": r_start - round_,
        "8 round's read in thread": r_end - r_start,
        "9 round's read: thread -> loop": r_back - r_end,
        "10 decide -> write queued": write[0] - r_back,
        "11 write: queue -> thread": w_start - write[0],
        "12 write: SQL + commit in thread": w_end - w_start,
        "13 write: thread -> loop": w_back - w_end,
        "14 loop resumes -> waiter woken": changed - w_back,
        "15 woken -> wait returns": woken - changed,
        "16 wait returns -> answer written": sent - woken,
        "17 answer written -> client read": t1 - sent,
        "total (client)": t1 - t0,
    }


def close_steps(events: list[Event], t2: float, t3: float) -> dict[str, float]:
    """The steps of one close, each as a duration (s)."""
    recv = _find(events, "recv", t2, t3)[0]
    entered = _find(events, "tickets.close>", t2, t3)[0]
    write = _find(events, "store.run>", entered, t3, by="close_ticket<")
    w_start, w_end, w_back = _unit(events, write)
    closed = _find(events, "tickets.close<", w_back, t3)[0]
    sent = _find(events, "sent", closed, t3)[0]
    return {
        "1 client send -> server read": recv - t2,
        "2 read -> close entered": entered - recv,
        "3 write: queue -> thread": w_start - write[0],
        "4 write: SQL + commit in thread": w_end - w_start,
        "5 write: thread -> loop": w_back - w_end,
        "6 loop resumes -> close returns": closed - w_back,
        "7 close returns -> answer written": sent - closed,
        "8 answer written -> client read": t3 - sent,
        "total (client)": t3 - t2,
    }


Times = tuple[float, float, float, float]
"""The client's stamps of one ticket: create sent, create read, close sent, close read."""


def drive(tickets: int) -> tuple[list[Times], list[Event]]:
    """Serve with the probes, run ``tickets`` warm tickets (after 20 unmeasured); the client's
    stamps and the server's events."""
    import http_api
    import httpx

    with tempfile.TemporaryDirectory(prefix="corral-trace-") as tmp:
        trace = Path(tmp) / "trace"
        workdir = Path(tmp)
        config = workdir / "corral.yaml"
        config.write_text(http_api.CONFIG.format(store=f"sqlite:///{workdir / 'corral.db'}"))
        env = http_api._env()
        subprocess.run(
            [sys.executable, "-m", "corral", "db", "upgrade", "--config", str(config)],
            cwd=workdir,
            env=env,
            check=True,
            capture_output=True,
        )
        port = http_api.free_port()
        url = f"http://127.0.0.1:{port}"
        argv = [sys.executable, "-c", SERVE, str(trace), "serve", "--config", str(config)]
        argv += ["--port", str(port), "--log-level", "warning"]
        log = (workdir / "serve.log").open("w")
        proc = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
        client: list[tuple[float, float, float, float]] = []
        try:
            with httpx.Client(base_url=url, timeout=5) as probe:
                http_api._until(proc, workdir, lambda: http_api._healthy(probe))
                http_api._until(proc, workdir, lambda: http_api._ready(probe) >= 20)
            time.sleep(1.0)
            with httpx.Client(base_url=url, timeout=60) as http:
                for i in range(tickets + 20):
                    t0 = time.monotonic()
                    ticket = http.post(
                        "/v1/tickets", json={"pool": http_api.POOL}, params={"wait": 30}
                    ).json()
                    t1 = time.monotonic()
                    if ticket["state"] != "assigned":
                        raise SystemExit(f"ticket not assigned at once: {ticket}")
                    t2 = time.monotonic()
                    http.post(f"/v1/tickets/{ticket['id']}/close").raise_for_status()
                    t3 = time.monotonic()
                    if i >= 20:
                        client.append((t0, t1, t2, t3))
        finally:
            proc.terminate()
            proc.wait(30)
            log.close()
        events: list[Event] = []
        for line in trace.read_text().splitlines():
            at, name, thread = line.split(" ", 2)
            events.append((float(at), name, thread))
        events.sort()
    return client, events


def report(client: list[Times], events: list[Event], dump: int) -> None:
    """Print ``dump`` tickets' events, then the median of each step."""
    for t0, t1, t2, t3 in client[:dump]:
        print(f"--- ticket: create {(t1 - t0) * 1000:.3f} ms, close {(t3 - t2) * 1000:.3f} ms")
        for at, name, thread in events:
            if t0 - 0.002 <= at <= t3:
                print(f"  {(at - t0) * 1000:8.3f} {name:<20} {thread}")
        print(f"  {(t1 - t0) * 1000:8.3f} CLIENT READ create; {(t2 - t0) * 1000:8.3f} SEND close")
    print(f"load average: {os.getloadavg()}; {len(client)} warm tickets")
    for title, steps, pick in (
        ("create (POST ?wait=30, answered assigned)", create_steps, lambda c: (c[0], c[1])),
        ("close", close_steps, lambda c: (c[2], c[3])),
    ):
        table: dict[str, list[float]] = defaultdict(list)
        skipped = 0
        for times in client:
            try:
                found = steps(events, *pick(times))
            except (LookupError, KeyError):
                skipped += 1
                continue
            for name, value in found.items():
                table[name].append(value)
        print(f"\n{title}: median ms of each step ({skipped} tickets not traced whole)")
        for name, values in table.items():
            print(f"  {name:<42} {statistics.median(values) * 1000:7.3f}")
    busy: dict[str, list[float]] = defaultdict(list)
    for t0, t1, _, _ in client:
        inside = [e for e in events if t0 <= e[0] <= t1]
        busy["store units started"].append(sum(1 for e in inside if ".run>#" in e[1]))
        busy["processes started"].append(sum(1 for e in inside if e[1] == "popen>"))
        busy["assignment rounds"].append(sum(1 for e in inside if e[1] == "assign_once>"))
        busy["VM reads (get_vm)"].append(
            sum(1 for e in inside if e[1].startswith("store.read>") and e[2].startswith("get_vm"))
        )
    print("\nwithin a create's window: median count of")
    for name, values in busy.items():
        print(f"  {name:<42} {statistics.median(values):7.1f}")


def main() -> None:
    """Serve, drive the warm tickets, print the median of each step."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=50)
    parser.add_argument("--dump", type=int, default=0, help="print the events of N tickets")
    args = parser.parse_args()
    client, events = drive(args.tickets)
    report(client, events, args.dump)


if __name__ == "__main__":
    main()
