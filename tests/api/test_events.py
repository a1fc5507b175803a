"""The event stream: the hub's numbering, filtering, replay and dropping (in-process), then
``GET /v1/events`` over a real socket with user and admin tokens."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, auth, controller_class, make_config

from corral import exceptions
from corral.api import stream
from corral.api.auth import OPEN, Principal, Role
from corral.api.server import BackgroundServer
from corral.controller.events import Event, EventBus
from corral.pools.model import PoolStatus, Ticket, TicketState

ALICE = Principal(owner="alice", role=Role.USER)
BOB = Principal(owner="bob", role=Role.USER)


class FakeController:
    """Just what the hub asks of a controller: a ticket's owner and the pools' counts."""

    def __init__(self) -> None:
        self.tickets: dict[str, str] = {}
        self.lookups = 0

    async def get_ticket(self, ticket_id: str) -> Ticket:
        self.lookups += 1
        if ticket_id not in self.tickets:
            raise exceptions.TicketNotFound(ticket_id)
        return Ticket(
            id=ticket_id,
            owner=self.tickets[ticket_id],
            state=TicketState.WAITING,
            created_at=0.0,
            expires_at=None,
        )

    async def list_pools(self) -> list[PoolStatus]:
        return [PoolStatus("p", "fake", (), 4, 2, 1, vms={"ready": 1})]


def _hub(**kwargs: Any) -> tuple[stream.EventHub, FakeController]:
    ctl = FakeController()
    kwargs.setdefault("clock", lambda: 0.0)  # ids 100, 101, ...: the clock is behind them
    kwargs.setdefault("first_id", 100)
    return stream.EventHub(ctl, EventBus(), **kwargs), ctl  # type: ignore[arg-type]


def _ticket(tid: str, owner: str | None = None, state: str = "waiting") -> Event:
    data: dict[str, Any] = {} if owner is None else {"owner": owner}
    return Event("ticket", tid, state, 1.0, data)


def _drain(listener: stream.Listener) -> list[tuple[int, str, dict[str, Any]]]:
    """The frames waiting in a listener, parsed: (id, event, data)."""
    frames = []
    while listener._frames:
        lines = listener._frames.popleft().decode().strip().split("\n")
        fields = dict(line.split(": ", 1) for line in lines)
        frames.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
    return frames


async def test_ids_increase_and_each_event_is_encoded_once() -> None:
    hub, _ = _hub()
    one, two = hub.listen(OPEN), hub.listen(OPEN)
    await hub.handle(_ticket("t1", "alice"))
    await hub.handle(Event("vm", "vm-1", "ready", 2.0, {"pool": "p"}))
    # the very same bytes object for every listener: encoded once, not once per listener
    assert one._frames[0] is two._frames[0]
    frames = _drain(one)
    assert [(i, kind) for i, kind, _ in frames] == [(100, "ticket"), (101, "vm")]
    assert frames[0][2]["owner"] == "alice"
    await hub.close()


async def test_a_user_sees_only_its_own_tickets_and_pool_counts() -> None:
    hub, ctl = _hub()
    alice, bob, admin = hub.listen(ALICE), hub.listen(BOB), hub.listen(OPEN)
    await hub.handle(_ticket("ta", "alice"))
    await hub.handle(_ticket("tb", "bob"))
    await hub.handle(_ticket("ta", state="assigned"))  # later events carry no owner
    await hub.handle(Event("vm", "vm-1", "in_use", 2.0, {"pool": "p", "ticket": "ta"}))
    await hub.handle(Event("task", "task-1", "running", 2.0, {"verb": "spawn"}))
    await hub.flush_pools(every=True)
    assert [(k, d["id"]) for _, k, d in _drain(alice)] == [
        ("ticket", "ta"),
        ("ticket", "ta"),
        ("pool", "p"),
    ]
    assert [(k, d["id"]) for _, k, d in _drain(bob)] == [("ticket", "tb"), ("pool", "p")]
    assert [k for _, k, _ in _drain(admin)] == ["ticket", "ticket", "ticket", "vm", "task", "pool"]
    assert ctl.lookups == 0  # owners learnt from the creation events
    await hub.close()


async def test_the_owner_of_a_ticket_created_before_the_hub_is_looked_up_once() -> None:
    hub, ctl = _hub()
    ctl.tickets["old"] = "alice"
    alice, bob = hub.listen(ALICE), hub.listen(BOB)
    await hub.handle(_ticket("old", state="closed"))
    await hub.handle(_ticket("old", state="closed"))
    assert [d["id"] for _, _, d in _drain(alice)] == ["old", "old"]
    assert _drain(bob) == []
    assert ctl.lookups == 1
    await hub.close()


async def test_last_event_id_replays_what_was_missed_or_says_resync() -> None:
    hub, _ = _hub(history=5)
    for n in range(8):  # ids 100..107; the history keeps 103..107
        await hub.handle(_ticket(f"t{n}", "alice" if n % 2 else "bob"))
    replay = hub.listen(ALICE, last_id=104)
    assert [i for i, _, _ in _drain(replay)] == [105, 107]  # alice's only
    for last in (101, 5000):  # older than the history; from another life of the server
        resync = _drain(hub.listen(ALICE, last_id=last))
        assert [k for _, k, _ in resync] == ["resync"], last
    assert _drain(hub.listen(ALICE, last_id=107)) == []  # up to date
    await hub.close()


async def test_ids_follow_the_clock_and_increase_across_restarts() -> None:
    """Catches: ids counted from the process's start only (a restart after a burst of more
    events than microseconds elapsed reuses ids), a clock stepping back repeating an id, and a
    replay that assumes consecutive ids (it would skip or repeat frames)."""
    now = [1000.0]
    hub, _ = _hub(clock=lambda: now[0], first_id=None, history=4)
    assert hub.last_id == 1000 * 1_000_000 - 1
    for n in range(6):  # a burst: the clock does not move, the ids go on by one
        await hub.handle(_ticket(f"t{n}", "alice"))
    burst_end = hub.last_id
    assert burst_end == 1000 * 1_000_000 + 5
    now[0] = 1000.5
    await hub.handle(_ticket("later", "alice"))
    assert hub.last_id == 1_000_500_000
    now[0] = 999.0  # the clock steps back: ids still increase
    await hub.handle(_ticket("back", "alice"))
    assert hub.last_id == 1_000_500_001
    # the history keeps the last 4: a reconnect after the burst's 4th event gets what followed
    replay = _drain(hub.listen(ALICE, last_id=burst_end - 1))
    assert [d["id"] for _, _, d in replay] == ["t5", "later", "back"]
    trimmed = _drain(hub.listen(ALICE, last_id=burst_end - 3))
    assert [k for _, k, _ in trimmed] == ["resync"]
    await hub.close()
    now[0] = 1000.6  # a restart: the new process's first id is above every earlier one
    restarted, _ = _hub(clock=lambda: now[0], first_id=None)
    await restarted.handle(_ticket("new", "alice"))
    assert restarted.last_id > 1_000_500_001
    assert [k for _, k, _ in _drain(restarted.listen(ALICE, last_id=burst_end))] == ["resync"]
    await restarted.close()


async def test_the_kinds_filter_keeps_only_the_kinds_asked_for() -> None:
    hub, _ = _hub()
    vms = hub.listen(OPEN, kinds=stream.parse_kinds("vm"))
    await hub.handle(_ticket("t1", "alice"))
    await hub.handle(Event("vm", "vm-1", "ready", 2.0, {"pool": "p"}))
    assert [k for _, k, _ in _drain(vms)] == ["vm"]
    with pytest.raises(exceptions.InvalidInput, match="bogus"):
        stream.parse_kinds("vm,bogus")
    with pytest.raises(exceptions.InvalidInput, match="Last-Event-ID"):
        stream.parse_last_id("12; drop")
    await hub.close()


async def test_a_slow_listener_is_dropped_with_a_reason_and_blocks_no_one() -> None:
    hub, _ = _hub(buffer=10)
    slow, fast = hub.listen(OPEN), hub.listen(OPEN)
    for n in range(25):
        await hub.handle(_ticket(f"t{n}", "alice"))
        _drain(fast)  # a client that keeps up
    assert slow.reason is not None and "too slow" in slow.reason
    assert fast.reason is None
    assert hub.listeners == 1  # the slow one is no longer served
    frames = [f async for f in slow.frames()]
    assert len(frames) == 1 and b"event: dropped" in frames[0] and b"too slow" in frames[0]
    await hub.close()


async def test_the_bus_overflowing_tells_every_listener_to_resync() -> None:
    hub, _ = _hub()
    listener = hub.listen(OPEN)
    await hub.handle(_ticket("t1", "alice"))
    await hub.handle(Event("overflow", "", "dropped", 1.0, {"dropped": 3}))
    assert [k for _, k, _ in _drain(listener)] == ["ticket", "resync"]
    # what came before the gap can no longer be replayed
    assert [k for _, k, _ in _drain(hub.listen(OPEN, last_id=100))] == ["resync"]
    await hub.close()


# --- over a real socket --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server() -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(), factory=controller_class().create) as running:
        yield running


def _read_until(
    response: httpx.Response, wanted: str, seen: list[dict[str, Any]]
) -> dict[str, Any]:
    """Read events into ``seen`` until one is about ticket ``wanted``."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            event = {"eid": int(line[4:])}
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event.update(json.loads(line[6:]))
            seen.append(event)
            if event.get("id") == wanted and event["event"] == "ticket":
                return event
    raise AssertionError(f"the stream ended before ticket {wanted}")


def test_a_user_stream_shows_its_tickets_not_another_owners(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        with http.stream("GET", "/v1/events", headers=auth(ALICE_TOKEN)) as alice:
            assert alice.status_code == 200
            assert alice.headers["content-type"].startswith("text/event-stream")
            bobs = http.post("/v1/tickets", json={"pool": "small"}, headers=auth(BOB_TOKEN))
            mine = http.post("/v1/tickets", json={"pool": "small"}, headers=auth(ALICE_TOKEN))
            seen: list[dict[str, Any]] = []
            first = _read_until(alice, mine.json()["id"], seen)
        assert first["owner"] == "alice"
        assert bobs.json()["id"] not in {e.get("id") for e in seen}
        assert {e["event"] for e in seen} <= {"ticket", "pool"}
        ids = [e["eid"] for e in seen]
        assert ids == sorted(set(ids))  # strictly increasing
        # reconnecting after the first event replays alice's later events, in order
        with http.stream(
            "GET",
            "/v1/events",
            headers={**auth(ADMIN_TOKEN), "Last-Event-ID": "1"},
        ) as admin:
            line = next(line for line in admin.iter_lines() if line.startswith("event: "))
        assert line == "event: resync"
        for ticket in (bobs, mine):
            http.post(f"/v1/tickets/{ticket.json()['id']}/close", headers=auth(ADMIN_TOKEN))


def test_the_stream_needs_a_token_and_refuses_bad_input(server: BackgroundServer) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/events").status_code == 401
        bad = http.get("/v1/events", params={"kinds": "vm,nope"}, headers=auth(ADMIN_TOKEN))
        assert bad.status_code == 422
        assert "nope" in bad.json()["error"]["message"]
        bad = http.get("/v1/events", headers={**auth(ADMIN_TOKEN), "Last-Event-ID": "x"})
        assert bad.status_code == 422


async def test_readyz_and_healthz(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    app: Any = http._transport.app  # type: ignore[attr-defined]
    app.state.corral.stopping.set()
    assert (await http.get("/readyz")).status_code == 503
    await asyncio.sleep(0)


async def test_a_task_repeating_its_state_is_sent_once() -> None:
    hub, _ = _hub()
    listener = hub.listen(OPEN)
    for state in ("running", "running", "running", "finished"):
        await hub.handle(Event("task", "task-1", state, 1.0, {"verb": "spawn"}))
    assert [d["state"] for _, _, d in _drain(listener)] == ["running", "finished"]
    await hub.close()


async def test_the_hub_closes_the_streams_when_the_server_stops() -> None:
    hub, _ = _hub()
    stopping = asyncio.Event()
    hub.close_on(stopping)
    listener = hub.listen(OPEN)
    stopping.set()
    frames = [f async for f in listener.frames()]
    assert b"the server is stopping" in frames[-1]
    await hub.close()


async def test_a_silent_stream_gets_a_keep_alive_comment() -> None:
    """Catches the keep-alive round no longer offering a comment to a silent stream (a proxy
    would then close an idle stream)."""
    hub, _ = _hub(keepalive=0.05)
    listener = hub.listen(OPEN)
    frames = listener.frames()
    async with asyncio.timeout(10):
        while (chunk := await anext(frames)) != b": keep-alive\n\n":
            assert b"event: pool" in chunk  # the counts published at start, nothing else
    await frames.aclose()
    await hub.close()


async def test_a_burst_goes_out_in_one_write_per_listener() -> None:
    """Catches the hub waking a listener once per frame instead of once per write tick (each
    wake-up is one socket write: hundreds of streams would cost the controller's loop)."""
    hub, _ = _hub(coalesce=1.0)

    async def writes(listener: stream.Listener, n: int) -> int:
        """The writes (chunks) that bring ``n`` ticket events (the pool counts not counted)."""
        chunks = listener.frames()
        count = 0
        while n > 0:
            tickets = (await anext(chunks)).count(b"event: ticket")
            n -= tickets
            count += tickets > 0
        await chunks.aclose()
        return count

    async with asyncio.timeout(20):
        first = [asyncio.create_task(writes(hub.listen(OPEN), 1)) for _ in range(3)]
        await hub.handle(_ticket("t0", "alice"))
        assert await asyncio.gather(*first) == [1, 1, 1]  # an idle hub sends at once
        streams = [asyncio.create_task(writes(hub.listen(OPEN), 49)) for _ in range(3)]
        for n in range(1, 50):
            await hub.handle(_ticket(f"t{n}", "alice"))
            await asyncio.sleep(0)  # the streams' tasks run between two events
        counts = await asyncio.gather(*streams)
    # a tick is 1 s: the 49 events come in one write, two if a tick fell amid them
    assert max(counts) <= 2, counts
    await hub.close()
