"""Two ``corral serve`` hosts on one PostgreSQL stream the same events under the same ids
(issue 12): a ticket created on host A is seen on host B's ``GET /v1/events`` with the ids A
gives it; a client that leaves A and reconnects to B with ``Last-Event-ID`` gets exactly what it
missed; ids strictly increase on both streams. Then every connection of both hosts to the
database is killed: both streams go on with no gap and no repeated id.

Breakages caught: the hub numbering cluster events itself (ids differ between A and B, or B
never shows A's ticket); resuming from the hub's memory only (B answers A's id with
``resync``); a log reader that restarts from its first position or skips after a reconnect
(repeated or missing ids after the kill).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from corral.api.server import free_port

from .test_chaos_serve import Host, ready, until, write_config

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]


OBSERVER = "corral-test-events-observer"
"""The ``application_name`` of this test's own connections (never killed by it)."""


def db(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True, application_name=OBSERVER) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


@dataclass
class Stream:
    """One ``GET /v1/events`` connection, its frames as (id, event, data)."""

    url: str
    last_id: int | None = None
    frames: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Stream:
        self.task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30, read=None)) as http,
            http.stream("GET", self.url + "/v1/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            block: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line:
                    if not line.startswith(":"):
                        key, _, value = line.partition(": ")
                        block[key] = value
                    continue
                if "id" in block and "data" in block:
                    self.frames.append(
                        (int(block["id"]), block["event"], json.loads(block["data"]))
                    )
                block = {}

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def ids(self) -> list[int]:
        return [i for i, _, _ in self.frames]

    def ticket(self, ticket_id: str, state: str) -> bool:
        return any(
            k == "ticket" and d["id"] == ticket_id and d["state"] == state
            for _, k, d in self.frames
        )


async def wait_for(check: Any, what: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def after(frames: list[tuple[int, str, dict[str, Any]]], first: int, last: int) -> list[Any]:
    return [f for f in frames if first < f[0] <= last]


def increasing(ids: list[int]) -> bool:
    return all(a < b for a, b in itertools.pairwise(ids))


async def test_two_hosts_stream_one_sequence_and_resume_on_each_other(
    pg_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path, pg_url)
    a, b = (Host(h, free_port(), tmp_path / f"{h}.log") for h in ("h1", "h2"))
    streams: list[Stream] = []
    try:
        a.start(config)
        await until(lambda: ready(a), "h1 ready", 60)
        b.start(config)
        await until(lambda: ready(b), "h2 ready", 60)
        on_a, on_b = Stream(a.url).start(), Stream(b.url).start()
        streams += [on_a, on_b]
        async with httpx.AsyncClient(timeout=30) as http:
            await asyncio.sleep(1.0)  # both streams connected
            created = await http.post(a.url + "/v1/tickets", json={"pool": "p"})
            assert created.status_code in (200, 201), created.text
            ticket = created.json()["id"]
            for s in (on_a, on_b):
                await wait_for(lambda s=s: s.ticket(ticket, "assigned"), "assigned on both")
            # the same events under the same ids on both hosts
            common = min(on_a.ids[-1], on_b.ids[-1])
            start = max(on_a.ids[0], on_b.ids[0])
            assert after(on_a.frames, start, common) == after(on_b.frames, start, common)
            assert after(on_a.frames, start, common), "no event in common"
            # a client of A leaves, things happen, it comes back on B with A's last id
            left_at = on_a.ids[-1]
            await on_a.stop()
            closed = await http.post(b.url + f"/v1/tickets/{ticket}/close")
            assert closed.status_code == 200, closed.text
            await wait_for(lambda: on_b.ticket(ticket, "closed"), "closed on b")
            resumed = Stream(b.url, last_id=left_at).start()
            streams.append(resumed)
            await wait_for(lambda: resumed.ticket(ticket, "closed"), "closed on the resumed")
            upto = min(resumed.ids[-1], on_b.ids[-1])
            assert resumed.frames[0][0] > left_at
            assert [f for f in resumed.frames if f[0] <= upto] == after(on_b.frames, left_at, upto)
            assert "resync" not in {k for _, k, _ in resumed.frames}

            # every connection of both hosts to the database killed: no gap, no repeat
            killed = db(
                pg_url,
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                " AND application_name <> %s",
                (OBSERVER,),
            )
            assert killed[0][0] > 0
            second = None
            end = time.monotonic() + 60
            while second is None:  # a request in flight may fail while the store reconnects
                try:
                    reply = await http.post(b.url + "/v1/tickets", json={"pool": "p"})
                    if reply.status_code in (200, 201):
                        second = reply.json()["id"]
                except httpx.TransportError:
                    pass
                assert time.monotonic() < end, "no ticket created after the kill"
                await asyncio.sleep(0.2)
            for s in (on_b, resumed):
                await wait_for(lambda s=s: s.ticket(second, "assigned"), "the next ticket")
        table = [int(r[0]) for r in db(pg_url, "SELECT id FROM cluster_events ORDER BY id")]
        for s in (on_b, resumed):
            assert increasing(s.ids), s.ids
            assert s.ids == [i for i in table if s.ids[0] <= i <= s.ids[-1]]
        assert increasing(on_a.ids)
    finally:
        for s in streams:
            await s.stop()
        for host in (a, b):
            if host.running:
                host.kill()
