"""A static pool of loopback addresses served by the controller (issue 15, ``type: static``).

Machines are ``127.0.0.<n>`` on this host; ``cleanup`` is a shell script that fails for a
machine when a flag file says so. What the tests catch:

- every machine acquired, the next ticket waits, and gets the machine another ticket frees —
  never the one whose cleanup failed (breakage: ``end`` freeing a machine whatever the cleanup
  said, or ``hand_out`` ignoring maintenance);
- the same through the release path of a reusing pool (breakage: ``release`` not holding the
  machine when its cleanup fails: the next ``terminate`` would clean and free it);
- the inventory file edited while serving: an added machine serves the waiting ticket, a removed
  one stays with its ticket and then retires (breakage: the file not re-read, or ``prune``
  ending reservations of removed machines).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from corral.backends import load_backend
from corral.backends.static import StaticBackend
from corral.config import parse_config
from corral.controller import Controller
from corral.pools.model import Ticket, TicketState

CLEANUP = """\
echo "$CORRAL_MACHINE $CORRAL_VM_NAME" >> "$1/cleaned"
if [ -e "$1/fail-$CORRAL_MACHINE" ]; then echo "wipe of $CORRAL_MACHINE failed" >&2; exit 4; fi
exit 0
"""


def loopback(*numbers: int) -> list[dict[str, Any]]:
    return [{"name": f"m{n}", "address": f"127.0.0.{n}"} for n in numbers]


@asynccontextmanager
async def static_pool(
    tmp_path: Path, backend: dict[str, Any], **pool: Any
) -> AsyncIterator[tuple[Controller, StaticBackend]]:
    """A started controller on one static pool ``p`` (memory store), and its backend."""
    (tmp_path / "cleanup.sh").write_text(CLEANUP)
    options = {"cleanup": ["sh", str(tmp_path / "cleanup.sh"), str(tmp_path)], **backend}
    raw = {
        "backend": {"type": "static", **options},
        "min_ready": 0,
        "poll_interval": 0.02,
        "spawn_timeout": 60,
        "terminate_timeout": 10,
        **pool,
    }
    cfg = parse_config({"store": "memory://", "pools": {"p": raw}}, env={}, base_dir=tmp_path)
    instance = load_backend("static", options, pool="p", base_dir=tmp_path)
    assert isinstance(instance, StaticBackend)
    ctl = await Controller.create(cfg, backends={"p": instance}, tick=0.05)
    try:
        await ctl.start()
        yield ctl, instance
    finally:
        await ctl.stop()


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def acquire(ctl: Controller, owner: str, **kwargs: Any) -> Ticket:
    ticket = await ctl.create_ticket(owner=owner, pool="p", **kwargs)
    return await ctl.wait_ticket(ticket.id, timeout=30)


async def address_of(ctl: Controller, ticket: Ticket) -> str:
    assert ticket.vm is not None
    address = (await ctl.get_vm(ticket.vm)).address
    assert address is not None
    return address


async def machine_state(backend: StaticBackend, name: str) -> tuple[str, str | None]:
    status = {s.name: s for s in await backend.inventory()}[name]
    return status.state.value, status.reason


async def test_every_machine_taken_then_a_failed_cleanup_holds_one_and_the_next_frees_one(
    tmp_path: Path,
) -> None:
    async with static_pool(tmp_path, {"machines": loopback(1, 2, 3)}) as (ctl, backend):
        assert ctl.pool_config("p").max == 3  # the inventory bounds the pool
        held = [await acquire(ctl, f"u{i}") for i in range(3)]
        addresses = [await address_of(ctl, t) for t in held]
        assert sorted(addresses) == ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
        waiting = await ctl.create_ticket(owner="late", pool="p")
        await until(lambda: _settled(ctl), "the controller to settle")
        assert (await ctl.get_ticket(waiting.id)).state is TicketState.WAITING

        broken = f"m{addresses[0].rsplit('.', 1)[1]}"
        (tmp_path / f"fail-{broken}").touch()
        await ctl.close_ticket(held[0].id)

        async def in_maintenance() -> bool:
            return (await machine_state(backend, broken))[0] == "maintenance"

        await until(in_maintenance, f"{broken} in maintenance")
        reason = (await machine_state(backend, broken))[1]
        assert reason is not None and f"wipe of {broken} failed" in reason
        assert (await ctl.get_ticket(waiting.id)).state is TicketState.WAITING

        await ctl.close_ticket(held[1].id)
        served = await ctl.wait_ticket(waiting.id, timeout=30)
        assert await address_of(ctl, served) == addresses[1]

        # the operator returns the machine: the next ticket gets it
        await backend.return_machine(broken)
        again = await acquire(ctl, "after")
        assert await address_of(ctl, again) == addresses[0]


async def test_a_failed_cleanup_between_tickets_of_a_sandbox_holds_the_machine(
    tmp_path: Path,
) -> None:
    pool = {"reuse": {"sandbox": True}}
    async with static_pool(tmp_path, {"machines": loopback(1, 2)}, **pool) as (ctl, backend):
        first = await acquire(ctl, "a", sandbox="s")
        second = await acquire(ctl, "b", sandbox="s")
        waiting = await ctl.create_ticket(owner="c", pool="p", sandbox="s")
        broken = f"m{(await address_of(ctl, first)).rsplit('.', 1)[1]}"
        (tmp_path / f"fail-{broken}").touch()
        await ctl.close_ticket(first.id)

        async def first_vm_gone() -> bool:
            assert first.vm is not None
            return not (await ctl.get_vm(first.vm)).alive

        await until(first_vm_gone, "the VM of the failed cleanup to be terminated")
        state, reason = await machine_state(backend, broken)
        assert state == "maintenance" and reason is not None and "exited with 4" in reason
        cleaned = (tmp_path / "cleaned").read_text().splitlines()
        assert cleaned.count(f"{broken} {first.vm}") == 1  # the rollback did not clean again
        assert (await ctl.get_ticket(waiting.id)).state is TicketState.WAITING

        await ctl.close_ticket(second.id)  # cleaned and reused for the same sandbox
        served = await ctl.wait_ticket(waiting.id, timeout=30)
        assert served.vm == second.vm
        assert await address_of(ctl, served) == await address_of(ctl, second)


async def test_the_inventory_file_edited_while_serving(tmp_path: Path) -> None:
    inventory = tmp_path / "machines.yaml"

    def write(*numbers: int) -> None:
        lines = [f"- {{name: m{n}, address: 127.0.0.{n}}}" for n in numbers]
        inventory.write_text("\n".join(lines) + "\n", encoding="utf-8")

    write(1, 2)
    async with static_pool(tmp_path, {"inventory": "machines.yaml"}, max=4) as (ctl, backend):
        one = await acquire(ctl, "a")
        two = await acquire(ctl, "b")
        assert {await address_of(ctl, one), await address_of(ctl, two)} == {
            "127.0.0.1",
            "127.0.0.2",
        }
        third = await ctl.create_ticket(owner="c", pool="p")
        write(1, 2, 3)  # a machine joins
        assert await address_of(ctl, await ctl.wait_ticket(third.id, timeout=30)) == "127.0.0.3"

        retired = f"m{(await address_of(ctl, one)).rsplit('.', 1)[1]}"
        write(*[n for n in (1, 2, 3) if f"m{n}" != retired])  # a held machine leaves
        await until(lambda: _is(backend, retired, "retiring"), f"{retired} retiring")
        assert (await ctl.get_ticket(one.id)).state is TicketState.ASSIGNED  # not disturbed
        assert one.vm is not None and (await ctl.get_vm(one.vm)).state.value == "in_use"

        await ctl.close_ticket(one.id)

        async def retired_gone() -> bool:
            return retired not in {s.name for s in await backend.inventory()}

        await until(retired_gone, f"{retired} to leave")
        fourth = await ctl.create_ticket(owner="d", pool="p")
        await ctl.close_ticket(two.id)
        served = await ctl.wait_ticket(fourth.id, timeout=30)
        assert await address_of(ctl, served) == await address_of(ctl, two)
        assert all(s.state.value != "retiring" for s in await backend.inventory())


async def _is(backend: StaticBackend, name: str, state: str) -> bool:
    return (await machine_state(backend, name))[0] == state


async def _settled(ctl: Controller) -> bool:
    return ctl.idle()
