"""A simulated cloud for the cloud-backend tests and ``bench/cloud.py``: moto's EC2 server in a
subprocess, and a fault-injecting HTTP proxy in front of it.

moto keeps its state in memory, so a fault is never "restart the server": the proxy throttles
(answers ``RequestLimitExceeded`` 503), loses answers (forwards the request, then closes the
connection without answering: the call happened, the caller cannot know), answers late (after
the caller's read timeout, the call having happened), hangs, refuses a call with an error (e.g.
``AuthFailure``), or refuses everything (the API unreachable), and counts every call by action
with its time. ``MotoServer.pause`` (SIGSTOP) is the other outage: connections are accepted and
nothing answers until SIGCONT, when moto runs the requests it queued.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIACORRALTESTKEY000",
    "AWS_SECRET_ACCESS_KEY": "corral-test-secret-MUST-NOT-LEAK-1234567890",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent/corral-aws-config",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/corral-aws-credentials",
}
"""Fake credentials for the tests (the secret is distinctive, so a leak is easy to find)."""
REGION = "us-east-1"
AMI = "ami-03cf127a"
"""One of the AMIs moto ships in us-east-1 (listing them all takes seconds; moto does not check)."""


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class MotoServer:
    """moto's server (a real HTTP EC2 API) on 127.0.0.1, in a subprocess."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the server and wait until it answers."""
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **FAKE_CREDENTIALS},
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=2):  # noqa: S310
                    return
            except OSError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto server did not start") from None
                time.sleep(0.1)

    def reset(self) -> None:
        """Forget every resource (moto's reset API)."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset", method="POST", data=b"")  # noqa: S310
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310
            pass

    def stop(self) -> None:
        """Stop the server."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel, nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(19)

    def resume(self) -> None:
        """SIGCONT the server."""
        assert self._proc is not None
        self._proc.send_signal(18)


THROTTLE_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>corral-proxy</RequestID></Response>"
)

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>CODE</Code><Message>Refused by the fault proxy.</Message>"
    b"</Error></Errors><RequestID>corral-proxy</RequestID></Response>"
)


@dataclass
class Faults:
    """What the proxy does to the next requests (all counters count down per request)."""

    throttle: int = 0
    """Answer this many requests with 503 RequestLimitExceeded (nothing reaches moto)."""
    throttle_actions: frozenset[str] | None = None
    """Only these actions are throttled (``None``: all)."""
    lose_answer: int = 0
    """Forward this many requests of ``lose_actions``, then close without answering."""
    lose_actions: frozenset[str] = frozenset({"RunInstances"})
    down: bool = False
    """Refuse everything: close each connection without forwarding (the API is unreachable)."""
    hang: float = 0.0
    """Hold each request of ``hang_actions`` this many seconds before forwarding it."""
    hang_actions: frozenset[str] | None = None
    """Only these actions hang (``None``: all)."""
    status_not_ok: bool = False
    """Rewrite DescribeInstanceStatus answers: every ``ok`` check becomes ``initializing``."""
    late_answer: int = 0
    """Forward this many requests of ``late_actions``, then hold the answer ``late_by`` seconds
    (longer than the client's read timeout: it gives up after the call took effect)."""
    late_actions: frozenset[str] = frozenset({"RunInstances"})
    late_by: float = 0.0
    fail: int = 0
    """Answer this many requests with ``fail_status`` and the error ``fail_code`` (nothing
    reaches moto): a definite refusal, such as AuthFailure."""
    fail_code: str = "AuthFailure"
    fail_status: int = 401


TRACE_HEADER = "X-Corral-Trace"
"""A request header the benchmark adds to tell its calls apart at the proxy."""


@dataclass
class Traffic:
    """What went through the proxy."""

    calls: Counter[str] = field(default_factory=Counter)
    """Requests per action that reached moto."""
    times: list[tuple[float, str]] = field(default_factory=list)
    """(monotonic time, action) of every request the proxy received, faults included."""
    throttled: int = 0
    lost: int = 0
    refused: int = 0
    late: int = 0
    failed: int = 0
    key_ids: Counter[str] = field(default_factory=Counter)
    """Requests per access key id they were signed with (SigV4 ``Credential=KEY/...``)."""
    traced: dict[str, float] = field(default_factory=dict)
    """Monotonic time of each request carrying a :data:`TRACE_HEADER`, by its value (the
    benchmark matches the calls it sent with the times they arrived)."""


class FaultProxy:
    """An HTTP proxy in front of moto that injects faults and counts calls."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.faults = Faults()
        self.traffic = Traffic()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                proxy._handle(self, b"")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                proxy._handle(self, self.rfile.read(length) if length else b"")

        class Server(ThreadingHTTPServer):
            # socketserver's default listen backlog is 5: a storm opening dozens of connections
            # at once overflows it, the kernel drops SYNs and the clients' connects stall for
            # seconds (1 s, 3 s, 7 s ... retransmits) — a fault of the test double, not the cloud
            request_queue_size = 1024

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def set(self, **faults: object) -> None:
        """Change the faults (keyword arguments of :class:`Faults`)."""
        with self.lock:
            for key, value in faults.items():
                setattr(self.faults, key, value)

    def close(self) -> None:
        """Stop the proxy."""
        self._server.shutdown()
        self._server.server_close()

    @staticmethod
    def _action(handler: BaseHTTPRequestHandler, body: bytes) -> str:
        query = urllib.parse.urlsplit(handler.path).query
        params = urllib.parse.parse_qs(query) | urllib.parse.parse_qs(body.decode("latin-1"))
        return (params.get("Action") or ["?"])[0]

    def _decide(self, action: str, key_id: str, trace: str | None = None) -> str:
        with self.lock:
            now = time.monotonic()
            self.traffic.times.append((now, action))
            if trace:
                self.traffic.traced[trace] = now
            self.traffic.key_ids[key_id] += 1
            f = self.faults
            if f.down:
                self.traffic.refused += 1
                return "refuse"
            if f.throttle > 0 and (f.throttle_actions is None or action in f.throttle_actions):
                f.throttle -= 1
                self.traffic.throttled += 1
                return "throttle"
            if f.fail > 0:
                f.fail -= 1
                self.traffic.failed += 1
                return "fail"
            self.traffic.calls[action] += 1
            if f.lose_answer > 0 and action in f.lose_actions:
                f.lose_answer -= 1
                self.traffic.lost += 1
                return "lose"
            if f.late_answer > 0 and action in f.late_actions:
                f.late_answer -= 1
                self.traffic.late += 1
                return "late"
            return "forward"

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        action = self._action(handler, body)
        hang, only = self.faults.hang, self.faults.hang_actions
        if hang and (only is None or action in only):
            time.sleep(hang)
        signed = handler.headers.get("Authorization") or ""
        key_id = signed.partition("Credential=")[2].partition("/")[0]
        decision = self._decide(action, key_id, handler.headers.get(TRACE_HEADER))
        if decision == "refuse":
            handler.close_connection = True
            return
        if decision in ("throttle", "fail"):
            status, error = 503, THROTTLE_BODY
            if decision == "fail":
                status = self.faults.fail_status
                error = ERROR_BODY.replace(b"CODE", self.faults.fail_code.encode())
            handler.send_response(status)
            handler.send_header("Content-Type", "text/xml")
            handler.send_header("Content-Length", str(len(error)))
            handler.end_headers()
            handler.wfile.write(error)
            return
        conn = http.client.HTTPConnection("127.0.0.1", self.upstream_port, timeout=60)
        try:
            headers = {k: v for k, v in handler.headers.items() if k.lower() != "connection"}
            conn.request(handler.command, handler.path, body=body or None, headers=headers)
            answer = conn.getresponse()
            payload = answer.read()
        finally:
            conn.close()
        if decision == "lose":
            handler.close_connection = True  # moto did it; the caller never hears
            return
        if decision == "late":
            time.sleep(self.faults.late_by)  # moto did it; the caller has given up by now
        if action == "DescribeInstanceStatus" and self.faults.status_not_ok:
            payload = payload.replace(b"<status>ok</status>", b"<status>initializing</status>")
        handler.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)


def first_ami(url: str) -> str:
    """An AMI id moto knows (it ships a few)."""
    import boto3

    client = boto3.client("ec2", region_name=REGION, endpoint_url=url)
    images = client.describe_images()["Images"]
    return str(sorted(i["ImageId"] for i in images)[0])


def ec2_client(url: str):  # type: ignore[no-untyped-def]
    """A plain boto3 EC2 client on ``url`` (to look at moto behind corral's back)."""
    import boto3

    return boto3.client("ec2", region_name=REGION, endpoint_url=url)


def live_instances(
    url: str, *, pool: str | None = None, namespace: str | None = None
) -> dict[str, list[str]]:
    """Instance ids per ``corral:vm`` tag (``""`` when untagged) that are not going away."""
    client = ec2_client(url)
    out: dict[str, list[str]] = {}
    for page in client.get_paginator("describe_instances").paginate():
        for reservation in page["Reservations"]:
            for inst in reservation["Instances"]:
                if inst["State"]["Name"] in ("shutting-down", "terminated"):
                    continue
                tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
                if pool is not None and tags.get("corral:pool") != pool:
                    continue
                if namespace is not None and tags.get("corral:namespace") != namespace:
                    continue
                out.setdefault(tags.get("corral:vm", ""), []).append(inst["InstanceId"])
    return out


class ProxyProcess:
    """A :class:`FaultProxy` (no faults) in its own process, for timing at the wire: in the
    measuring process its threads would share the GIL with the SDK's XML parsing, and their
    timestamps would bunch when the parser runs."""

    def __init__(self, upstream_port: int, times_file: str) -> None:
        self.times_file = times_file
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tests.backends.cloud.cloudsim", str(upstream_port), times_file],
            stdout=subprocess.PIPE,
            cwd=str(Path(__file__).resolve().parents[3]),
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())
        self.url = f"http://127.0.0.1:{self.port}"
        self.traced: dict[str, float] = {}
        """After :meth:`stop`: the arrival time of each traced request (``Traffic.traced``)."""

    def stop(self) -> list[tuple[float, str]]:
        """Stop the proxy; the (monotonic time, action) of every request it received."""
        self._proc.send_signal(15)
        self._proc.wait(30)
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        with open(self.times_file) as f:
            saved = json.load(f)
        self.traced = {str(k): float(v) for k, v in saved["traced"].items()}
        return [(float(t), str(a)) for t, a in saved["times"]]


def _proxy_main(upstream_port: int, times_file: str) -> None:
    # the proxy's clock is the wire's: on a loaded machine a descheduled proxy stamps the
    # requests that queued meanwhile all at once (5 calls sent over 0.6 s stamped within 3 ms,
    # load 11), a burst that never was; a higher priority keeps it running (root only)
    with contextlib.suppress(OSError):
        os.nice(-10)
    proxy = FaultProxy(upstream_port)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(proxy.port, flush=True)
    done.wait()
    proxy.close()
    with open(times_file, "w") as f:
        json.dump({"times": proxy.traffic.times, "traced": proxy.traffic.traced}, f)


if __name__ == "__main__":
    _proxy_main(int(sys.argv[1]), sys.argv[2])
