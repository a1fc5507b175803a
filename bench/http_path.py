"""Benchmark: the HTTP layers' CPU per request, in process (issue 14).

The ASGI app of ``corral serve`` (middleware, routing, dependencies, serialisation) is called
directly, without a socket, uvicorn or h11, on the memory store and the fake backend; the figure
is the process's CPU time per request (``time.process_time``), so it does not depend on the
machine's load as much as wall time does. ``GET /healthz`` is the framework's floor;
``GET /v1/tickets/{id}`` (the owner's read of a waiting ticket, with a bearer token) is what
every client's long-poll pays before it waits; a create followed by its close is the rest of a
ticket's requests (the pair's CPU). Run: ``python bench/http_path.py``; point
``PYTHONPATH`` at another checkout to compare.

``--wire`` measures the same two requests through a real server instead (uvicorn, its HTTP parser
and the event loop included): for each of h11 or httptools on asyncio's loop or uvloop, a server
in its own process, one client process sending the requests on ``--connections`` kept-alive
connections, and the server's CPU per request read from ``/proc`` (so that the machine's load
changes it less than a latency). The variants alternate round by round (``--rounds``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from corral.api import create_app  # noqa: E402
from corral.config import parse_config  # noqa: E402
from corral.controller import Controller  # noqa: E402

TOKEN = "bench-token-0001"  # noqa: S105 - a token of this bench only
CONFIG: dict[str, Any] = {
    "store": "memory://",
    "api": {"tokens": {TOKEN: {"owner": "bench", "role": "user"}}},
    "pools": {"one": {"backend": {"type": "fake"}, "max": 1, "max_starting": 1, "min_ready": 0}},
}


async def call(app: Any, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """One request through the ASGI app; its status and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"127.0.0.1"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.Event().wait()  # the client never goes away
        raise AssertionError

    out: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    await app(scope, receive, send)
    return int(out[0]["status"]), b"".join(m.get("body", b"") for m in out[1:])


async def _create_close(app: Any, body: bytes) -> None:
    """Create a ticket (it waits: the pool's only VM is taken) and close it."""
    status, answer = await call(app, "POST", "/v1/tickets", body)
    if status != 201:
        raise SystemExit(f"create: {status} {answer!r}")
    ticket = json.loads(answer)["id"]
    status, answer = await call(app, "POST", f"/v1/tickets/{ticket}/close")
    if status != 200:
        raise SystemExit(f"close: {status} {answer!r}")


async def measure(n: int) -> dict[str, float]:
    """CPU microseconds per request of each measured route."""
    config = parse_config(CONFIG, env={})
    ctl = await Controller.create(config)
    await ctl.start()
    try:
        app = create_app(ctl, config)
        body = json.dumps({"pool": "one"}).encode()
        status, _ = await call(app, "POST", "/v1/tickets", body)  # takes the only VM (or waits)
        ids = []
        for _ in range(100):  # tickets that wait: their reads are what a long-poll pays first
            status, answer = await call(app, "POST", "/v1/tickets", body)
            if status != 201:
                raise SystemExit(f"create: {status} {answer!r}")
            ids.append(json.loads(answer)["id"])
        paths = {
            "GET /healthz": ["/healthz"],
            "GET /v1/tickets/{id}": [f"/v1/tickets/{i}" for i in ids],
        }
        found = {}
        for _ in range(200):  # warm
            await _create_close(app, body)
        start = time.process_time()
        for _ in range(n):
            await _create_close(app, body)
        found["POST /v1/tickets + POST /v1/tickets/{id}/close"] = (
            (time.process_time() - start) / n * 1e6
        )
        for name, targets in paths.items():
            for path in targets:  # warm
                await call(app, "GET", path)
            start = time.process_time()
            for k in range(n):
                status, answer = await call(app, "GET", targets[k % len(targets)])
                if status != 200:
                    raise SystemExit(f"{name}: {status} {answer!r}")
            found[name] = (time.process_time() - start) / n * 1e6
        return found
    finally:
        await ctl.stop()


SERVE = """
import asyncio, json, sys
from corral.api import server
from corral.config import parse_config
config, port, parser, loop = json.loads(sys.argv[1])
running = server.Server(parse_config(config, env={}), port=port, parser=parser, freeze_gc=True)
(server.run if loop == "uvloop" else asyncio.run)(running.run())
"""

VARIANTS = [
    ("h11", "asyncio"),
    ("httptools", "asyncio"),
    ("h11", "uvloop"),
    ("httptools", "uvloop"),
]
"""The parser and the event loop of each measured server; h11 on asyncio is what corral ran
before uvloop and httptools."""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _get(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes) -> bytes:
    """One request on a kept-alive connection; its body (status 200 required)."""
    writer.write(head)
    await writer.drain()
    status_line, *lines = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
    length = 0
    for line in lines:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    if status_line.split()[1] != b"200":
        raise SystemExit(f"{head.splitlines()[0]!r}: {status_line!r} {body!r}")
    return body


async def _load(port: int, heads: list[bytes], connections: int, n: int) -> None:
    async def one(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for i in range(k, n, connections):
                await _get(reader, writer, heads[i % len(heads)])
        finally:
            writer.close()

    await asyncio.gather(*(one(k) for k in range(connections)))


def _client(port: int, heads: list[bytes], connections: int, n: int, go: Any, out: Any) -> None:
    out.put("ready")
    go.wait()
    try:
        asyncio.run(_load(port, heads, connections, n))
        out.put("done")
    except BaseException as exc:  # the parent must hear of it rather than wait for ever
        out.put(f"client: {exc!r}")


def _ready(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nhost: bench\r\nconnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def wire_round(parser: str, loop: str, n: int, connections: int) -> dict[str, float]:
    """Server CPU microseconds per request of each route, through ``parser`` on ``loop``."""
    from corral.api.server import free_port

    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    argv = [sys.executable, "-c", SERVE, json.dumps([CONFIG, port, parser, loop])]
    process = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 60
        while not _ready(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the {parser}/{loop} server did not start")
            time.sleep(0.05)
        auth = f"authorization: Bearer {TOKEN}\r\n"
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"authorization": f"Bearer {TOKEN}"}
        ) as http:
            # the first takes the only VM, the others wait
            ids = [http.post("/v1/tickets", json={"pool": "one"}).json()["id"] for _ in range(101)]
        routes = {
            "GET /healthz": [b"GET /healthz HTTP/1.1\r\nhost: bench\r\n\r\n"],
            "GET /v1/tickets/{id}": [
                f"GET /v1/tickets/{i} HTTP/1.1\r\nhost: bench\r\n{auth}\r\n".encode()
                for i in ids[1:]
            ],
        }
        found = {}
        ctx = multiprocessing.get_context("spawn")
        for name, heads in routes.items():
            out, go = ctx.Queue(), ctx.Event()
            client = ctx.Process(target=_client, args=(port, heads, connections, n, go, out))
            client.start()
            if out.get(timeout=120) != "ready":
                raise SystemExit("the client did not start")
            before = _cpu_seconds(process.pid)
            go.set()
            if (answer := out.get(timeout=600)) != "done":
                raise SystemExit(answer)
            found[name] = (_cpu_seconds(process.pid) - before) / n * 1e6
            client.join(30)
        return found
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def wire(n: int, connections: int, rounds: int) -> None:
    """Alternate the variants ``rounds`` times and print each round's figures."""
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"through a server, server CPU per request ({stamp}, {n} requests per route on "
        f"{connections} connections, load average at the start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
        + "):",
        flush=True,
    )
    for _ in range(rounds):
        for parser, loop in VARIANTS:
            found = wire_round(parser, loop, n, connections)
            figures = ", ".join(f"{name} {micros:.0f} us" for name, micros in found.items())
            load = os.getloadavg()[0]
            print(f"  {parser:9} on {loop:7}: {figures} (load {load:.2f})", flush=True)


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per route")
    parser.add_argument("--wire", action="store_true", help="through real servers (see above)")
    parser.add_argument("--connections", type=int, default=20, help="with --wire")
    parser.add_argument("--rounds", type=int, default=2, help="with --wire")
    args = parser.parse_args()
    if args.wire:
        wire(args.requests, args.connections, args.rounds)
        return
    found = asyncio.run(measure(args.requests))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"HTTP layers in process, CPU per request ({stamp}, load average {load}):")
    for name, micros in found.items():
        print(f"  {name}: {micros:.0f} us")


if __name__ == "__main__":
    main()
