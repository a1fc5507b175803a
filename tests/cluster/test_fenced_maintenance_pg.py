"""A pool leader whose lease moved while it believed it still led (paused past its lease, its
epoch check passed before the pause) makes no late write: every maintenance write carries the
lease's fence and the store refuses it (``StaleEpoch``, logged) — hold expiry, retirement, a
livecheck's result, ticket expiry, a drain, an orphan's termination — and nothing changes. A
task's job whose grant of the VM's lock was freed meanwhile cannot move the VM either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.config import parse_config
from corral.controller import Controller, records, recovery, takeover
from corral.controller.reconcile import ReconcilePlan
from corral.pools.model import TicketState, VMState

pytestmark = pytest.mark.postgres

DEADLINE = 60.0


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description is not None else []


async def _until(what: str, check: Any) -> None:
    end = asyncio.get_running_loop().time() + DEADLINE
    while not await check():
        assert asyncio.get_running_loop().time() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


class Offset:
    """The controller's wall clock, moved by the test (hold and ticket deadlines)."""

    def __init__(self) -> None:
        self.by = 0.0

    def __call__(self) -> float:
        return time.time() + self.by


async def _make(url: str, tmp_path: Path, pool: dict[str, Any], clock: Offset) -> Controller:
    from corral.backends import validate_options
    from corral.backends.fake import FakeBackend

    # a long lease: this host goes on believing it leads however slowly the machine runs, and
    # only the store's fence can refuse its writes
    raw = {"store": url, "pools": {"p": pool}, "cluster": {"host_id": "h1", "lease": 120}}
    options = {"seed": 1, **pool.pop("fake", {})}
    fake = FakeBackend(validate_options("fake", options), pool="p", base_dir=tmp_path)
    return await Controller.create(
        parse_config(raw, env={}, base_dir=tmp_path), backends={"p": fake}, tick=0.1, clock=clock
    )


def _take_lease_elsewhere(ctl: Controller, url: str) -> None:
    """This host is paused, as far as the others know: another host takes the pool's lease;
    this one still believes it leads and its epoch check already passed."""

    async def passed(pool: str) -> None:
        return None

    ctl.check_leadership = passed  # type: ignore[method-assign]
    assert ctl.cluster is not None
    ctl.cluster.member.pause_heartbeats()
    _sql(
        url,
        "UPDATE cluster_leases SET holder = 'h2', session = 's2', epoch = epoch + 1"
        " WHERE name = 'pool/p'",
    )


@pytest.fixture
async def leader(pg_cluster_url: str, tmp_path: Path) -> AsyncIterator[tuple[Controller, Offset]]:
    pool = {
        "backend": {"type": "fake"},
        "max": 3,
        "min_ready": 3,
        "poll_interval": 0.05,
        "reuse": {"max_age": 1000},
        "livecheck": {"period": 3600, "attempts": 1},
    }
    clock = Offset()
    ctl = await _make(pg_cluster_url, tmp_path, pool, clock)
    try:
        await ctl.start()
        assert ctl.leads("p")
        yield ctl, clock
    finally:
        await ctl.stop()


async def test_a_stale_leaders_maintenance_writes_are_refused_and_change_nothing(
    pg_cluster_url: str, leader: tuple[Controller, Offset], caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: the maintenance round not passing its lease's fence to hold expiry,
    retirement, livechecks or ticket expiry, or a drain or an orphan's termination made
    without it (the check before the round is all there is: a leader paused after it makes
    each of these writes on a pool another host leads); the orphan watch terminating a row
    without the fence."""
    ctl, clock = leader

    async def three_ready() -> bool:
        return len(await ctl.list_vms(pool="p", state="ready")) == 3

    await _until("three ready VMs", three_ready)
    ticket = await ctl.create_ticket(owner="o", pool="p", ttl=3600)
    ticket = await ctl.wait_ticket(ticket.id, timeout=DEADLINE)
    assert ticket.state is TicketState.ASSIGNED
    idle = [vm.name for vm in await ctl.list_vms(pool="p", state="ready")]
    held = (await ctl.hold_vm(idle[0], 50)).name
    ready = idle[1]
    await ctl.maintenance.stop()  # the test runs the duties itself
    _take_lease_elsewhere(ctl, pg_cluster_url)
    orphan = await ctl.store.pools.create_vm("p", state="spawning", now=clock())
    vms_before = {v.name: v for v in await ctl.store.pools.list_vms(pool="p")}
    tickets_before = await ctl.store.pools.list_tickets()

    with caplog.at_level(logging.WARNING):
        # a round when only the hold is due: refused, the pool's round stops there
        clock.by = 100.0
        await ctl.maintenance.run_once(wait=True)
        assert f"refused a write of VM {held}" in caplog.text
        later = time.time() + 10_000
        with pytest.raises(exceptions.StaleEpoch):  # the ready VM is past max_age
            await ctl.maintenance.retire("p", later)
        assert f"refused a write of VM {ready}" in caplog.text
        assert await ctl.maintenance.expire_tickets(later) == 0
        assert f"refused the end of ticket {ticket.id}" in caplog.text
        fake = ctl.backend("p").backend

        async def failing(handle: object) -> bool:
            return False

        fake.livecheck = failing  # type: ignore[method-assign]
        caplog.clear()
        await ctl.maintenance.livechecks("p", later)
        assert f"refused a write of VM {ticket.vm}" in caplog.text
        assert f"refused a write of VM {ready}" in caplog.text
        with pytest.raises(exceptions.StaleEpoch):
            await ctl.operators.drain_idle("p", fence=ctl.lease_fence("p"))
        # the leader's orphan watch: the row stays without a task for a lease, then its
        # termination is refused
        assert ctl.cluster is not None
        member = ctl.cluster.member
        watch_clock = Offset()
        watch = takeover.OrphanWatch(member, ctl, clock=watch_clock)
        caplog.clear()
        await watch.update(member.hosts, False)
        watch_clock.by = member.lease + 1.0
        await watch.update(member.hosts, False)
        assert f"refused a write of VM {orphan.name}" in caplog.text
        with pytest.raises(exceptions.StaleEpoch):
            plan = ReconcilePlan(orphans=(records.vm(orphan),))
            await recovery.act(ctl, "p", plan, fence=ctl.lease_fence("p"))

    assert {v.name: v for v in await ctl.store.pools.list_vms(pool="p")} == vms_before
    assert await ctl.store.pools.list_tickets() == tickets_before
    assert vms_before[held].state == VMState.HELD
    assert vms_before[ticket.vm or ""].state == VMState.IN_USE


async def test_a_jobs_vm_write_after_its_lock_grant_was_freed_is_refused(
    pg_cluster_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: the steps' VM writes not carrying the task's grant of ``vm/<name>``
    (a job whose lock was freed — its host's lease lapsed and the lock table reaped its
    grants — still marks the VM ready, while another holder may act on it); the host then
    moving the VM itself after its fenced task ended (the after-task check of a task that
    lost its right to act)."""
    pool = {
        "backend": {"type": "fake"},
        "max": 1,
        "min_ready": 1,
        "poll_interval": 0.05,
        "fake": {"spawn_latency": 3.0},
    }
    ctl = await _make(pg_cluster_url, tmp_path, pool, Offset())
    try:
        with caplog.at_level(logging.ERROR):
            await ctl.start()
            first = "p-000001"

            async def handle_known() -> bool:  # the spawn is waiting for the VM to come up
                row = await ctl.store.pools.get_vm(first)
                return row is not None and row.handle is not None

            await _until("the spawn's handle", handle_known)
            # the lock table frees the task's grant (what its reaper does for a lapsed host)
            gone = _sql(
                pg_cluster_url,
                "DELETE FROM lock_grants WHERE key = %s RETURNING token",
                (f"vm/{first}",),
            )
            assert len(gone) == 1

            async def refused() -> bool:
                return f"refused a write of VM {first}" in caplog.text

            await _until("the job's refused write", refused)
        assert f"vm/{first}" in caplog.text and "no longer granted" in caplog.text

        async def idle() -> bool:  # the task ended (its rollback refused too), nothing pending
            return ctl.idle()

        await _until("the refused task's end", idle)
        # this host was fenced off the VM: it leaves it as it was (to the lock's next holder, a
        # survivor's recovery or the leader's orphan watch), it does not move it itself
        row = await ctl.store.pools.get_vm(first)
        assert row is not None and row.ready_at is None and row.state == VMState.SPAWNING
    finally:
        await ctl.stop()


async def test_a_stale_leaders_eviction_is_refused(
    pg_cluster_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakage caught: preallocation evicting an idle used VM (to make room for a fresh one a
    waiting ticket needs) without its lease's fence: a leader paused after its check retires a
    VM of a pool another host leads."""
    pool = {
        "backend": {"type": "fake"},
        "max": 1,
        "min_ready": 0,
        "poll_interval": 0.05,
        "reuse": {"sandbox": True},
    }
    ctl = await _make(pg_cluster_url, tmp_path, pool, Offset())
    try:
        await ctl.start()
        first = await ctl.create_ticket(owner="o", pool="p", sandbox="a")
        first = await ctl.wait_ticket(first.id, timeout=DEADLINE)
        assert first.state is TicketState.ASSIGNED and first.vm is not None
        used = first.vm
        await ctl.close_ticket(first.id)

        async def reusable() -> bool:  # cleaned and back, serving sandbox a only
            vm = await ctl.get_vm(used)
            return vm.state is VMState.READY and vm.ticket is None

        await _until("the used VM back in the pool", reusable)
        _take_lease_elsewhere(ctl, pg_cluster_url)
        before = await ctl.store.pools.get_vm(used)
        with caplog.at_level(logging.ERROR):
            # a ticket of another sandbox: the full pool's top-up evicts the idle used VM
            await ctl.create_ticket(owner="o", pool="p", sandbox="b")

            async def refused() -> bool:
                return f"refused a write of VM {used}" in caplog.text

            await _until("the refused eviction", refused)
        assert await ctl.store.pools.get_vm(used) == before
    finally:
        await ctl.stop()
