"""Task writes fenced by the task's host on PostgreSQL: once a survivor claimed a task, every
write of its former host (paused past its lease, now awake) is refused with ``TaskTakenOver``
and logged, and the row is left as the survivor has it; a host that rejoined as a new
incarnation records its new tasks under the new key, so they are never taken for a dead host's.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from corral import exceptions
from corral.cluster.repository import HostInfo, MemoryCluster
from corral.cluster.service import Membership
from corral.config import parse_config
from corral.controller.takeover import Takeover
from corral.store import open_store
from corral.store.tasks import (
    DeleteTask,
    InsertTask,
    PopRecoveries,
    PushRecovery,
    RecoveryRow,
    StoredTask,
    TaskOp,
    TaskProgress,
    TaskRow,
    UpdateTask,
)

from .conftest import ManualClock

pytestmark = pytest.mark.postgres


def progress(state: str, jobs_done: int = 0) -> TaskProgress:
    return TaskProgress(state, jobs_done, "", "", "null", 1.0)


def row(tid: str) -> TaskRow:
    return TaskRow(
        id=tid,
        verb="spawn",
        tag="vm:a",
        priority="medium",
        recovery="auto",
        persist="auto",
        clean="manual",
        locks='{"vm/a": "exclusive"}',
        jobs='[{"name": "j", "args": {"pool": "p"}}]',
        created_at=1.0,
        progress=progress("running"),
    )


async def test_writes_of_a_task_another_host_claimed_are_refused_and_change_nothing(
    pg_cluster_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakages caught: task writes not conditional on the row's host (the woken host's
    progress overwrites the survivor's, its recovery pushes and pops land on a task it no
    longer runs, it deletes the survivor's task); a fence that refuses the owner's own
    writes; a refusal that is not logged."""
    import psycopg

    store = await open_store(pg_cluster_url)
    try:
        tasks = store.tasks
        assert hasattr(tasks, "host")
        tasks.host = "h1#1"
        await tasks.apply([InsertTask(row("t1")), PushRecovery(RecoveryRow("t1", 0, "r", "{}"))])
        await tasks.apply([UpdateTask("t1", progress("running", 1))])  # its own write passes
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:  # a survivor claims it
            conn.execute("UPDATE tasks SET host = 'h2#1' WHERE id = 't1'")
        before = await tasks.get("t1")
        stale: list[list[TaskOp]] = [
            [UpdateTask("t1", progress("finished", 2))],
            [PushRecovery(RecoveryRow("t1", 1, "r2", "{}"))],
            [PopRecoveries("t1", 0)],
            [DeleteTask("t1")],
            # a transaction that starts with a new task of its own writes nothing either
            [InsertTask(row("t2")), UpdateTask("t1", progress("finished", 2))],
        ]
        with caplog.at_level(logging.ERROR):
            for ops in stale:
                with pytest.raises(exceptions.TaskTakenOver, match="h2#1"):
                    await tasks.apply(ops)
        assert await tasks.get("t1") == before
        assert await tasks.get("t2") is None
        assert caplog.text.count("refused a write of task t1") == len(stale)
        tasks.host = "h2#1"  # the survivor writes freely
        await tasks.apply([UpdateTask("t1", progress("recovered", 1)), PopRecoveries("t1", 0)])
        got = await tasks.get("t1")
        assert got is not None and got.row.progress.state == "recovered" and not got.recoveries
        with pytest.raises(exceptions.TaskNotFound):
            await tasks.apply([UpdateTask("nope", progress("finished"))])
    finally:
        await store.close()


class _Engine:
    async def recover_tasks(self, stored: list[StoredTask]) -> None:
        raise AssertionError("nothing to recover here")


async def test_a_rejoined_host_records_its_new_tasks_under_its_new_incarnation(
    pg_cluster_url: str,
) -> None:
    """Breakage caught: the task repository keeping the first incarnation's key after a rejoin
    (a lost lease): every task the host starts afterwards is recorded as a dead incarnation's,
    and a survivor claims and undoes it while the live host runs it."""
    import psycopg

    store = await open_store(pg_cluster_url)
    clock = ManualClock()
    repo = MemoryCluster(clock)
    member = Membership(repo, "h1", lease=2.0, info=HostInfo())
    try:
        await member.join()
        tasks = store.tasks
        assert hasattr(tasks, "host")
        tasks.host = member.key
        config = parse_config({"store": pg_cluster_url, "pools": {}}, env={})
        takeover = Takeover(member, tasks, _Engine, config, clock=clock)
        clock.now += 10.0  # paused past its lease
        assert not await member.beat_once()  # lost: rejoined as incarnation 2
        assert member.key == "h1#2"
        await takeover.update(member.hosts, True)
        assert tasks.host == "h1#2"
        await tasks.apply([InsertTask(row("new"))])
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:
            hosts = conn.execute("SELECT host FROM tasks WHERE id = 'new'").fetchall()
        assert hosts == [("h1#2",)]
    finally:
        await store.close()


async def test_a_vm_row_is_written_only_under_the_live_epoch_of_the_pool_lease(
    pg_cluster_url: str,
) -> None:
    """Breakages caught: ``create_vm`` ignoring its fence (a stale leader's row is written
    and the pool's counter moves); a fence that refuses the live leader's own row."""
    import psycopg

    from corral.cluster.pgrepo import PgCluster
    from corral.store.pools import LeaseFence

    store = await open_store(pg_cluster_url)
    repo = PgCluster(pg_cluster_url)
    try:
        await repo.register("h1", "s1", 15.0, HostInfo())
        lease = await repo.take_lease("pool/p", "h1", "s1", 15.0)
        fence = LeaseFence("pool/p", "s1", lease.epoch)
        row = await store.pools.create_vm("p", state="spawning", now=1.0, fence=fence)
        assert row.name == "p-000001"
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:  # another host took it
            conn.execute(
                "UPDATE cluster_leases SET holder = 'h2', session = 's2', epoch = epoch + 1"
                " WHERE name = 'pool/p'"
            )
        with pytest.raises(exceptions.StaleEpoch, match="epoch 1"):
            await store.pools.create_vm("p", state="spawning", now=2.0, fence=fence)
        assert [v.name for v in await store.pools.list_vms(pool="p")] == ["p-000001"]
        assert await store.pools.vms_issued("p") == 1
    finally:
        await repo.close()
        await store.close()


async def test_a_leader_paused_between_its_check_and_its_spawn_writes_nothing(
    pg_cluster_url: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Breakage caught: preallocation not passing its lease's fence to the store (the check
    before the write is all there is: a leader paused between the check and the write spawns
    a VM for a pool another host leads now)."""
    import asyncio

    import psycopg

    from corral.backends import validate_options
    from corral.backends.fake import FakeBackend
    from corral.controller import Controller

    pool = {"backend": {"type": "fake"}, "max": 2, "min_ready": 0, "poll_interval": 0.05}
    # a long lease and no heartbeat after the take: this host goes on believing it leads (as a
    # paused one does) however slowly the machine runs, and only the store's fence can refuse
    raw = {"store": pg_cluster_url, "pools": {"p": pool}, "cluster": {"host_id": "h1", "lease": 30}}
    fake = FakeBackend(validate_options("fake", {"seed": 1}), pool="p", base_dir=tmp_path)
    ctl = await Controller.create(
        parse_config(raw, env={}, base_dir=tmp_path), backends={"p": fake}, tick=0.1
    )
    try:
        await ctl.start()
        assert ctl.leads("p")

        async def passed(pool: str) -> None:  # the check ran before the pause: it passed
            return None

        ctl.check_leadership = passed  # type: ignore[method-assign]
        assert ctl.cluster is not None
        ctl.cluster.member.pause_heartbeats()
        with psycopg.connect(pg_cluster_url, autocommit=True) as conn:  # meanwhile: taken
            conn.execute(
                "UPDATE cluster_leases SET holder = 'h2', session = 's2', epoch = epoch + 1"
                " WHERE name = 'pool/p'"
            )
        with caplog.at_level(logging.WARNING):
            await ctl.create_ticket(owner="o", pool="p")  # the demand kicks a top-up
            end = asyncio.get_running_loop().time() + 20
            while "refused a new VM of pool p" not in caplog.text:
                assert asyncio.get_running_loop().time() < end, "no fenced spawn attempt"
                await asyncio.sleep(0.05)
        assert await ctl.list_vms(pool="p") == []
    finally:
        await ctl.stop()
