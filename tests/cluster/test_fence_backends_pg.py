"""The fencing token of a task's ``vm/<name>`` lock reaches the backend (issue 11), through the
controller's steps and the guard, on PostgreSQL (durable, cluster-wide tokens) and not on a
single host's in-process locks.

The backend is the fake with fencing added (:class:`FencedFake`): it keeps the newest fence per
VM in a dictionary both "hosts" share (the way two machines see one hypervisor's metadata) and
refuses an older one as the real fenced backends do (``tests/backends/libvirt`` and
``tests/backends/cloud`` test those against libvirt's test driver and moto).

Breakages caught: the steps handing the backend no fence (``fence-not-passed``), a fence whose
token is not the task's grant (a recovery reusing the spawn's token instead of its own newer
one), a fence given on in-process locks (whose tokens restart with the process).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from corral.backends import fencing, validate_options
from corral.backends.base import Capability, Fence, FencedBackend, Handle, VMSpec
from corral.backends.fake import FakeBackend
from corral.config import parse_config
from corral.controller import Controller
from corral.pools.lifecycle import ALIVE_VM_STATES
from corral.pools.model import VMState

from .test_takeover_pg import _die, ordered_ids

DEADLINE = 30.0
SPAWN_TIMEOUT = 3.0


class FencedFake(FakeBackend, FencedBackend):
    """The fake backend, recording and checking fences per VM in ``fences`` (shared)."""

    def __init__(
        self,
        tmp: Path,
        fences: dict[str, Fence],
        calls: list[tuple[str, str, Any]],
        latency: float = 0.0,
    ) -> None:
        opts = validate_options(
            "fake", {"seed": 5, "state_file": "inventory.json", "spawn_latency": latency}
        )
        super().__init__(opts, pool="p", base_dir=tmp)
        self.capabilities = self.capabilities | {Capability.FENCING}
        self.fences = fences
        self.calls_seen = calls

    def _check(self, operation: str, name: str, fence: Fence | None) -> None:
        self.calls_seen.append((operation, name, fence))
        if fence is None:
            return
        fencing.admit(self.pool, operation, name, self.fences.get(name), fence)
        if fencing.must_record(self.fences.get(name), fence, every_grant=True):
            self.fences[name] = fence

    async def spawn(self, spec: VMSpec, *, fence: Fence | None = None) -> Handle:
        self._check("spawn", spec.name, fence)
        return await FakeBackend.spawn(self, spec)

    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        self._check("terminate", handle.name, fence)
        await FakeBackend.terminate(self, handle)

    async def release(self, handle: Handle, *, fence: Fence | None = None) -> None:
        self._check("release", handle.name, fence)
        await FakeBackend.release(self, handle)


def config(store: str, host_id: str, tmp: Path, **pool: object) -> Any:
    raw_pool = {
        "backend": {"type": "fake"},
        "max": 2,
        "min_ready": 1,
        "poll_interval": 0.05,
        "spawn_timeout": SPAWN_TIMEOUT,
        "terminate_timeout": SPAWN_TIMEOUT,
        **pool,
    }
    raw = {"store": store, "pools": {"p": raw_pool}, "cluster": {"host_id": host_id, "lease": 1.0}}
    return parse_config(raw, env={}, base_dir=tmp)


async def until(check: Callable[[], Any], what: str, timeout: float = DEADLINE) -> None:
    end = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        await asyncio.sleep(0.05)


def _of(calls: list[tuple[str, str, Any]], operation: str) -> list[tuple[str, Fence | None]]:
    return [(name, fence) for op, name, fence in calls if op == operation]


@pytest.mark.postgres
async def test_the_tasks_lock_token_reaches_the_backend(
    pg_cluster_url: str, tmp_path: Path
) -> None:
    fences: dict[str, Fence] = {}
    calls: list[tuple[str, str, Any]] = []
    ctl = await Controller.create(
        config(pg_cluster_url, "host-a", tmp_path),
        backends={"p": FencedFake(tmp_path, fences, calls)},
        tick=0.1,
    )
    try:
        await ctl.start()
        assert ctl.cluster is not None
        key = ctl.cluster.member.key

        async def ready() -> bool:
            return bool(await ctl.list_vms(pool="p", state=VMState.READY.value))

        await until(ready, "a VM is ready")
        [(name, spawned)] = _of(calls, "spawn")
        assert spawned is not None and spawned.holder == key
        assert spawned.token <= ctl.locks.last_token(f"vm/{name}")
        await ctl.terminate_vm(name)

        async def terminated() -> bool:
            return bool(_of(calls, "terminate"))

        await until(terminated, "the VM's termination reached the backend")
        [(gone, ended)] = _of(calls, "terminate")[:1]
        assert gone == name and ended is not None and ended.holder == key
        assert ended.token > spawned.token  # the termination task's own, newer grant
    finally:
        await ctl.stop()


async def test_in_process_locks_give_the_backend_no_fence(tmp_path: Path) -> None:
    """A single host (SQLite, in-process locks): tokens restart with the process, so the
    backend is given none and checks nothing."""
    fences: dict[str, Fence] = {}
    calls: list[tuple[str, str, Any]] = []
    store = f"sqlite:///{tmp_path / 'corral.db'}"
    ctl = await Controller.create(
        config(store, "solo", tmp_path),
        backends={"p": FencedFake(tmp_path, fences, calls)},
        tick=0.1,
    )
    try:
        await ctl.start()

        async def spawned() -> bool:
            return bool(_of(calls, "spawn"))

        await until(spawned, "a spawn reached the backend")
        assert _of(calls, "spawn")[0][1] is None
        assert fences == {}
    finally:
        await ctl.stop()


@pytest.mark.postgres
async def test_a_survivor_undoes_the_dead_hosts_spawn_under_its_newer_token(
    pg_cluster_url: str, tmp_path: Path
) -> None:
    """Host A's spawn records A's token; A dies; B takes the spawn over and its rollback's
    termination carries B's newer token and B's incarnation: the machine now records B, and a
    late call of A's under its old token is refused."""
    id_a, id_b = ordered_ids()
    fences: dict[str, Fence] = {}
    calls: list[tuple[str, str, Any]] = []
    slow = FencedFake(tmp_path, fences, calls, latency=60.0)  # in flight when A dies
    a = await Controller.create(
        config(pg_cluster_url, id_a, tmp_path), backends={"p": slow}, tick=0.1
    )
    b: Controller | None = None
    try:
        await a.start()
        assert a.cluster is not None
        a_key = a.cluster.member.key

        async def a_spawned() -> bool:
            assert a.cluster is not None
            return bool(_of(calls, "spawn")) and a_key in await a.cluster.member.repo.task_hosts()

        await until(a_spawned, "A spawned, its task in the store")
        [(name, a_fence)] = _of(calls, "spawn")[:1]
        assert a_fence is not None and a_fence.holder == a_key
        await _die(a)
        b = await Controller.create(
            config(pg_cluster_url, id_b, tmp_path),
            backends={"p": FencedFake(tmp_path, fences, calls)},
            tick=0.1,
        )
        await b.start()
        b_ctl = b

        async def undone() -> bool:
            vm = await b_ctl.get_vm(name)
            return vm.state not in ALIVE_VM_STATES

        await until(undone, "B undid A's spawn")
        ended = [f for n, f in _of(calls, "terminate") if n == name]
        assert ended and ended[0] is not None
        assert b.cluster is not None and ended[0].holder == b.cluster.member.key
        assert ended[0].token > a_fence.token
        assert fences[name] == ended[0]
        from corral import exceptions

        with pytest.raises(exceptions.StaleFence):
            await slow.terminate(Handle(name), fence=a_fence)  # A, woken up, is refused
    finally:
        if b is not None:
            await b.stop()
        await a.stop()
