"""Multi-machine and exclusive tickets through both clients (issue 15): ``acquire(count=N)``
yields the N VMs together and gives them back together; ``exclusive=True`` takes a whole VM.

What each test catches: the clients not sending ``count``/``exclusive`` (one VM, or a shared
one); sending them when they are the defaults (an older server refuses a field it does not
know); bad values sent instead of refused locally; a release that frees only the first VM.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from apitools import ADMIN_TOKEN, ALICE_TOKEN, controller_class
from multitools import multi_config

from corral import exceptions
from corral.api import create_app
from corral.api.server import BackgroundServer
from corral.client import AsyncClient, Client, core


@pytest.fixture(scope="module")
def multi() -> Iterator[BackgroundServer]:
    with BackgroundServer(multi_config(), factory=controller_class().create) as running:
        yield running


def test_the_body_carries_count_and_exclusive_only_when_asked() -> None:
    """Breakage caught: count/exclusive dropped from the body, or sent at their defaults
    (an older server refuses a field it does not know)."""
    plain = core.create_ticket(pool="p")
    assert plain.body == {"pool": "p", "tags": [], "priority": 0}
    both = core.create_ticket(pool="p", count=3, exclusive=True)
    assert both.body == {"pool": "p", "tags": [], "priority": 0, "count": 3, "exclusive": True}


@pytest.mark.parametrize(
    "bad",
    [{"count": 0}, {"count": "2"}, {"count": True}, {"count": 1001}, {"exclusive": "yes"}],
)
def test_bad_count_or_exclusive_is_refused_before_sending(bad: dict[str, object]) -> None:
    """Breakage caught: the local check removed (``"2"`` and ``True`` would reach the model
    as a pydantic error, 0 and 1001 the server)."""
    with pytest.raises(exceptions.InvalidInput, match=next(iter(bad))):
        core.create_ticket(pool="p", **bad)  # type: ignore[arg-type]
    with Client("http://127.0.0.1:9") as client, pytest.raises(exceptions.InvalidInput):
        client.create_ticket(pool="p", **bad)  # type: ignore[arg-type]


def _loads(client: Client, names: list[str]) -> list[int]:
    with Client(client.url, token=ADMIN_TOKEN) as admin:
        return [admin.get_vm(name).load for name in names]


def test_acquire_count_yields_every_vm_and_releases_them_together(
    multi: BackgroundServer,
) -> None:
    """Breakages caught: ``count`` not sent (mutant ``client-count-dropped``: one VM), the
    addresses of the other VMs missing, a release freeing only the first VM."""
    with Client(multi.url, token=ALICE_TOKEN) as client:
        with client.acquire(pool="trio", count=3, timeout=30) as ticket:
            assert ticket.count == 3
            assert len(set(ticket.vms)) == 3 and len(ticket.addresses) == 3
            assert all(ticket.addresses)
            assert (ticket.vm, ticket.address) == (ticket.vms[0], ticket.addresses[0])
            assert _loads(client, ticket.vms) == [1, 1, 1]
        closed = client.get_ticket(ticket.id)
        assert closed.state == "closed"
        assert _loads(client, ticket.vms) == [0, 0, 0], "a VM of the ticket is still held"
        with pytest.raises(exceptions.InvalidInput, match="count 4"):
            client.create_ticket(pool="trio", count=4)  # more than the pool's max


async def test_the_async_client_takes_a_whole_shared_vm() -> None:
    """Breakage caught: the async client not passing ``exclusive`` (a shared ticket would join
    the VM at once) or ``count``."""
    config = multi_config()
    ctl = await controller_class().create(config)
    await ctl.start()
    try:
        transport = httpx.ASGITransport(app=create_app(ctl, config))
        async with httpx.AsyncClient(transport=transport, base_url="http://corral.test") as http:
            client = AsyncClient(token=ALICE_TOKEN, http=http)
            async with client.acquire(pool="shared", exclusive=True, timeout=30) as whole:
                assert whole.exclusive and whole.vms == [whole.vm]
                admin = AsyncClient(token=ADMIN_TOKEN, http=http)
                vm = await admin.get_vm(whole.vm or "")
                assert (vm.load, vm.tickets, vm.exclusive) == (1, [whole.id], True)
                other = await client.create_ticket(pool="shared", wait=0.3)
                assert other.state == "waiting", "a shared ticket joined an exclusive VM"
            assert (await client.wait_ticket(other.id, timeout=30)).state == "assigned"
            async with client.acquire(pool="trio", count=2, timeout=30) as pair:
                assert len(pair.vms) == 2
            assert (await client.get_ticket(pair.id)).state == "closed"
            await client.close_ticket(other.id)
    finally:
        await ctl.stop()
