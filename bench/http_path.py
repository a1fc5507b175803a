"""Benchmark: the HTTP layers' CPU per request, in process (issue 14).

The ASGI app of ``corral serve`` (middleware, routing, dependencies, serialisation) is called
directly, without a socket, uvicorn or h11, on the memory store and the fake backend; the figure
is the process's CPU time per request (``time.process_time``), so it does not depend on the
machine's load as much as wall time does. ``GET /healthz`` is the framework's floor;
``GET /v1/tickets/{id}`` (the owner's read of a waiting ticket, with a bearer token) is what
every client's long-poll pays before it waits. Run: ``python bench/http_path.py``; point
``PYTHONPATH`` at another checkout to compare.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

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


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per route")
    args = parser.parse_args()
    found = asyncio.run(measure(args.requests))
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"HTTP layers in process, CPU per request ({stamp}, load average {load}):")
    for name, micros in found.items():
        print(f"  {name}: {micros:.0f} us")


if __name__ == "__main__":
    main()
