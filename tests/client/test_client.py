"""The Python clients against a real server (sync) and the in-process app (async)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN

from corral import exceptions
from corral.api.server import BackgroundServer
from corral.client import AsyncClient, Client


def _wait_until(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_acquire_holds_then_closes(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as client:
        with client.acquire(pool="small", sandbox="build-1", timeout=10) as ticket:
            assert ticket.state == "assigned"
            assert ticket.vm and ticket.address
            assert client.get_ticket(ticket.id).state == "assigned"
        assert client.get_ticket(ticket.id).state == "closed"


def test_acquire_closes_on_exception(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as client:
        with pytest.raises(RuntimeError, match="build broke"):
            with client.acquire(tags=["fedora"], timeout=10) as ticket:
                raise RuntimeError("build broke")
        assert client.get_ticket(ticket.id).state == "closed"


def test_acquire_renews_lease_in_background(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as client:
        with client.acquire(pool="small", ttl=1.5, timeout=10) as ticket:
            first = ticket.expires_at
            assert first is not None
            _wait_until(lambda: (client.get_ticket(ticket.id).expires_at or 0) > first)
            assert client.get_ticket(ticket.id).state == "assigned"


def test_acquire_timeout_cancels_ticket(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as client:
        with client.acquire(pool="tiny", timeout=10):  # the pool's only VM
            with pytest.raises(exceptions.TicketTimeout):
                with client.acquire(pool="tiny", timeout=0.3):
                    raise AssertionError("no VM should be free")
            waiting = client.list_tickets(state="waiting")
            assert waiting == [], "the timed-out ticket must be cancelled, not left queued"


def test_server_errors_come_back_as_their_classes(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as client:
        with pytest.raises(exceptions.TicketNotFound):
            client.get_ticket("no-such-ticket")
        with pytest.raises(exceptions.Forbidden):
            client.list_vms()
        with pytest.raises(exceptions.NoMatchingPool):
            client.create_ticket(tags=["sparc"])
    with Client(server.url, token="wrong-token-123") as client:  # noqa: S106
        with pytest.raises(exceptions.Unauthorized):
            client.list_tickets()
    with Client(server.url) as client:
        with pytest.raises(exceptions.Unauthorized):
            client.list_tickets()


def test_other_owners_ticket(server: BackgroundServer) -> None:
    with Client(server.url, token=ALICE_TOKEN) as alice, Client(server.url, token=BOB_TOKEN) as bob:
        ticket = alice.create_ticket(pool="small")
        with pytest.raises(exceptions.TicketNotFound):
            bob.close_ticket(ticket.id)
        assert alice.close_ticket(ticket.id).state in {"closed", "cancelled"}


def test_admin_operations(server: BackgroundServer) -> None:
    with Client(server.url, token=ADMIN_TOKEN) as admin:
        pools = {p.name: p for p in admin.list_pools()}
        assert set(pools) == {"small", "other", "tiny"}
        assert admin.get_pool("small").max == 4
        with admin.acquire(pool="small", timeout=10) as ticket:
            assert ticket.vm is not None
            vm = admin.get_vm(ticket.vm)
            assert vm.ticket == ticket.id
            assert ticket.vm in {v.name for v in admin.list_vms(pool="small")}
        assert isinstance(admin.list_tasks(), list)
        assert isinstance(admin.list_locks(), list)
        assert admin.health().status == "ok"
        with pytest.raises(exceptions.PoolNotFound):
            admin.get_pool("nope")
        with pytest.raises(exceptions.VMNotFound):
            admin.terminate_vm("nope")
        with pytest.raises(exceptions.TaskNotFound):
            admin.get_task("nope")


def test_unreachable_server() -> None:
    with Client("http://127.0.0.1:9", timeout=2) as client:
        with pytest.raises(exceptions.ServerUnreachable):
            client.health()


def test_bad_arguments_are_refused_before_sending() -> None:
    with Client("http://127.0.0.1:9") as client:
        with pytest.raises(exceptions.InvalidInput):
            client.create_ticket(tags="fedora")
        with pytest.raises(exceptions.InvalidInput):
            client.get_ticket("t1", wait=-1)
        with pytest.raises(exceptions.InvalidInput):
            client.get_ticket("")


async def test_async_acquire(asgi: httpx.AsyncClient) -> None:
    async with AsyncClient(token=ALICE_TOKEN, http=asgi) as client:
        async with client.acquire(pool="small", timeout=10) as ticket:
            assert ticket.state == "assigned"
            assert ticket.address
        assert (await client.get_ticket(ticket.id)).state == "closed"


async def test_async_acquire_closes_when_cancelled(asgi: httpx.AsyncClient) -> None:
    async with AsyncClient(token=ALICE_TOKEN, http=asgi) as client:
        entered = asyncio.Event()
        seen: list[str] = []

        async def job() -> None:
            async with client.acquire(pool="small", timeout=10) as ticket:
                seen.append(ticket.id)
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(job())
        await asyncio.wait_for(entered.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await client.get_ticket(seen[0])).state == "closed"


async def test_async_errors(asgi: httpx.AsyncClient) -> None:
    async with AsyncClient(token=BOB_TOKEN, http=asgi) as client:
        with pytest.raises(exceptions.TicketNotFound):
            await client.renew_ticket("nope")
        with pytest.raises(exceptions.Forbidden):
            await client.list_pools()
        tickets = await client.list_tickets()
        assert tickets == []
