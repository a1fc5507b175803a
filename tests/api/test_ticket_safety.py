"""Tickets that must not leak or be watched: foreign long-polls, abandoned creates, request keys."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN, auth, controller_class, make_config

from corral.api import create_app
from corral.api.keys import LocalKeys, TicketKeys

ALICE = auth(ALICE_TOKEN)
BOB = auth(BOB_TOKEN)
ADMIN = auth(ADMIN_TOKEN)


async def _post(http: httpx.AsyncClient, headers: dict[str, str], **kw: Any) -> httpx.Response:
    return await http.post("/v1/tickets", json={"pool": "tiny"}, headers=headers, **kw)


async def _take_tiny(http: httpx.AsyncClient) -> dict[str, Any]:
    """Alice's ticket holding pool tiny's only VM: the next tiny ticket waits."""
    held = (await _post(http, ALICE, params={"wait": 10})).json()
    assert held["state"] == "assigned", held
    return dict(held)


async def _open_tickets(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    tickets = (await http.get("/v1/tickets", headers=ADMIN)).json()
    return [t for t in tickets if t["state"] in {"waiting", "assigned"}]


async def test_long_poll_on_foreign_ticket_is_refused_at_once(http: httpx.AsyncClient) -> None:
    await _take_tiny(http)
    waiting = (await _post(http, ALICE)).json()
    assert waiting["state"] == "waiting"
    start = time.monotonic()
    response = await http.get(f"/v1/tickets/{waiting['id']}", params={"wait": 20}, headers=BOB)
    assert time.monotonic() - start < 2, "the refusal must not wait for the ticket to change"
    missing = await http.get("/v1/tickets/nope", params={"wait": 20}, headers=BOB)
    # Another owner's ticket is refused exactly like a missing one (issue 8 item 13): the
    # status, code and message shape tell bob nothing about which ids exist.
    assert response.status_code == missing.status_code == 404
    assert response.json()["error"]["code"] == missing.json()["error"]["code"]
    assert response.json()["error"]["message"].replace(waiting["id"], "X") == missing.json()[
        "error"
    ]["message"].replace("nope", "X")
    for action in ("renew", "close"):
        foreign = await http.post(f"/v1/tickets/{waiting['id']}/{action}", headers=BOB)
        assert foreign.status_code == 404, action


async def test_cancelled_create_and_wait_closes_its_ticket(http: httpx.AsyncClient) -> None:
    held = await _take_tiny(http)
    # In-process, cancelling the client cancels the handler, as a server shutting down would.
    request = asyncio.ensure_future(_post(http, ALICE, params={"wait": 20}))
    deadline = time.monotonic() + 10
    while len(await _open_tickets(http)) < 2:
        assert time.monotonic() < deadline, "the second ticket was never created"
        await asyncio.sleep(0.01)
    request.cancel()
    await asyncio.gather(request, return_exceptions=True)
    assert [t["id"] for t in await _open_tickets(http)] == [held["id"]]
    states = {t["state"] for t in (await http.get("/v1/tickets", headers=ADMIN)).json()}
    assert "cancelled" in states


async def test_idempotency_key_returns_the_first_ticket(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "k-0123456789abcdef"}
    by_key = f"/v1/tickets/by-key/{key['Idempotency-Key']}"
    first = await _post(http, {**ALICE, **key})
    again = await _post(http, {**ALICE, **key})
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert len(await _open_tickets(http)) == 1
    found = await http.get(by_key, headers=ALICE)
    assert found.json()["id"] == first.json()["id"]
    # Keys are per owner: bob neither finds alice's ticket nor gets it back.
    foreign = await http.get(by_key, headers=BOB)
    assert foreign.status_code == 404
    assert foreign.json()["error"]["code"] == "ticket_not_found"
    denied = await http.get(f"{by_key}?owner=alice", headers=BOB)
    assert denied.status_code == 403
    on_behalf = await http.get(f"{by_key}?owner=alice", headers=ADMIN)
    assert on_behalf.json()["id"] == first.json()["id"]
    bobs = await _post(http, {**BOB, **key})
    assert bobs.json()["id"] != first.json()["id"]


async def test_idempotency_key_misuse_is_refused(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "k-0123456789abcdef"}
    await _post(http, {**ALICE, **key})
    other = await http.post(
        "/v1/tickets", json={"pool": "small"}, headers={**ALICE, **key}, params={"wait": 0}
    )
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]["message"]
    bad = await _post(http, {**ALICE, "Idempotency-Key": "short"})
    assert bad.status_code == 422
    assert "Idempotency-Key" in bad.json()["error"]["message"]
    assert len(await _open_tickets(http)) == 1, "refused requests change nothing"


async def test_failed_create_frees_its_key(http: httpx.AsyncClient) -> None:
    key = {"Idempotency-Key": "k-0123456789abcdef"}
    refused = await http.post("/v1/tickets", json={"tags": ["sparc"]}, headers={**ALICE, **key})
    assert refused.status_code == 422
    created = await _post(http, {**ALICE, **key})
    assert created.status_code == 201


async def test_keys_are_forgotten_after_their_ttl_and_beyond_the_limit() -> None:
    now = [0.0]
    local = LocalKeys(limit=2)
    keys = TicketKeys(local, ttl=10.0, clock=lambda: now[0])
    for name in ("a", "b", "c"):
        async with keys.creating("alice", f"key-{name}") as record:
            assert await record(f"ticket-{name}") == f"ticket-{name}"
    assert await keys.lookup("alice", "key-a") is None, "the oldest goes beyond the limit"
    assert await keys.lookup("alice", "key-c") == "ticket-c"
    assert await keys.lookup("bob", "key-c") is None
    now[0] = 11.0
    assert await keys.lookup("alice", "key-c") is None
    assert await local.purge(now[0]) == 2
    assert len(local) == 0


async def test_a_key_recorded_by_another_server_wins() -> None:
    """Two servers sharing a store take one key at once: the second create gives its own
    ticket back and answers the first one's."""
    config = make_config()
    ctl = await controller_class().create(config)
    await ctl.start()
    try:
        first = await ctl.create_ticket(owner="alice", pool="small")
        assert ctl.store.keys is not None
        await ctl.store.keys.claim(
            "alice", "k-0123456789abcdef", first.id, now=time.time(), expires_at=time.time() + 60
        )
        app = create_app(ctl, config)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as http:
            # this server's in-process reservation is bypassed: the key is only in the store
            app.state.corral.keys = TicketKeys(_Late(ctl.store.keys))
            key = {"Idempotency-Key": "k-0123456789abcdef"}
            again = await http.post("/v1/tickets", json={"pool": "small"}, headers={**ALICE, **key})
            assert again.status_code == 201
            assert again.json()["id"] == first.id
            assert [t["id"] for t in await _open_tickets(http)] == [first.id]
    finally:
        await ctl.stop()


class _Late:
    """A keys repository whose lookups miss (as if the other server's claim came just after)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def get(self, owner: str, key: str, now: float) -> str | None:
        return None

    async def claim(self, *args: Any, **kwargs: Any) -> str:
        return str(await self.inner.claim(*args, **kwargs))

    async def purge(self, now: float) -> int:
        return 0


async def test_keys_on_an_open_server_belong_to_the_owner_named() -> None:
    config = make_config(tokens=False)
    ctl = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            key = {"Idempotency-Key": "k-0123456789abcdef"}
            body = {"pool": "small", "owner": "carol"}
            created = (await http.post("/v1/tickets", json=body, headers=key)).json()
            by_key = f"/v1/tickets/by-key/{key['Idempotency-Key']}"
            assert (await http.get(by_key)).status_code == 404, "anonymous has no such key"
            found = await http.get(by_key, params={"owner": "carol"})
            assert found.json()["id"] == created["id"]
    finally:
        await ctl.stop()
