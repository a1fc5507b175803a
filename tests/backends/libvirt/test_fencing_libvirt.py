"""Fencing tokens on libvirt domains (issue 11), on libvirt's test driver.

Breakages these catch: a spawn that does not record its fence in the domain's corral metadata
(``libvirt-fence-not-written``), a terminate that destroys a domain whose recorded token is
newer than the caller's (``libvirt-fence-unchecked``), a survivor that acts without recording
its newer token first, a ``StaleFence`` the guard turns into a retried ``BackendError``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import libvirt
import pytest

from corral import exceptions
from corral.backends.base import Capability, Fence, Handle
from corral.backends.guard import GuardedBackend
from corral.backends.libvirt import LibvirtBackend, domxml

from .conftest import options, private_hypervisor, unique_pool
from .test_backend import make, up, vm

OLD = Fence(3, "host-a#1")
NEW = Fence(7, "host-b#1")


def recorded(backend: LibvirtBackend, name: str, hid: str = "h0") -> Fence | None:
    """The fence in the domain's corral metadata, read straight from libvirt."""
    dom = backend._conns[hid].lookupByName(name)
    mark = domxml.parse_mark(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS))
    assert mark is not None
    return mark.fence


def exists(backend: LibvirtBackend, name: str, hid: str = "h0") -> bool:
    return name in {d.name() for d in backend._conns[hid].listAllDomains()}


async def test_the_backend_announces_fencing(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        assert guarded.has(Capability.FENCING)
    finally:
        await backend.aclose()


async def test_spawn_records_the_fence_in_the_domain_metadata(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        handle = await guarded.spawn(vm("vm-1"), fence=OLD)
        assert recorded(backend, "vm-1") == OLD
        await guarded.spawn(vm("vm-2"))  # no fence (a single host): none recorded
        assert recorded(backend, "vm-2") is None
        await guarded.terminate(handle, fence=NEW)
        assert not exists(backend, "vm-1")
    finally:
        await backend.aclose()


async def test_a_stale_holder_is_refused_and_the_newer_holder_acts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Host A spawned the VM under token 3 and was paused; host B took the VM's lock (token 7)
    and acted on it (a retried spawn records 7). A's terminate under 3 wakes up: refused,
    logged, nothing touched; B's terminate under its next token destroys the domain."""
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        handle = await up(guarded, vm("vm-1"))
        await guarded.spawn(vm("vm-1"), fence=OLD)  # A's spawn: the domain exists already
        assert recorded(backend, "vm-1") == OLD
        await guarded.spawn(vm("vm-1"), fence=NEW)  # B takes over: records its newer token
        assert recorded(backend, "vm-1") == NEW
        with caplog.at_level(logging.WARNING, logger="corral.backends.fencing"):
            with pytest.raises(exceptions.StaleFence) as caught:
                await guarded.terminate_until_confirmed(handle, attempts=5, fence=OLD)
        assert "token 3 of host-a#1 is older than the machine's 7 of host-b#1" in str(caught.value)
        assert any("refused" in r.getMessage() for r in caplog.records)
        assert guarded.stats()["terminate"].calls == 1  # never retried
        assert exists(backend, "vm-1")
        assert (tmp_path / "vms" / "p" / "vm-1").is_dir()  # its files are untouched too
        with pytest.raises(exceptions.StaleFence):  # nor may A spawn over it again
            await guarded.spawn(vm("vm-1"), fence=OLD)
        await guarded.terminate(handle, fence=Fence(9, "host-b#1"))
        assert not exists(backend, "vm-1")
        assert not (tmp_path / "vms" / "p" / "vm-1").exists()
    finally:
        await backend.aclose()


async def test_a_survivor_records_its_token_before_it_destroys(tmp_path: Path) -> None:
    """The survivor's newer token is on the domain before ``destroy`` runs: a stale holder
    reading the mark at that moment is refused."""
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    seen: list[Fence | None] = []
    try:
        handle = await guarded.spawn(vm("vm-1"), fence=OLD)
        dom = backend._conns["h0"].lookupByName("vm-1")
        original = backend._lookup

        def lookup(hid: str, name: str) -> libvirt.virDomain | None:
            found = original(hid, name)
            if found is not None:
                found = _Spy(found, lambda: seen.append(recorded(backend, name)))
            return found

        backend._lookup = lookup  # type: ignore[method-assign]
        await guarded.terminate(handle, fence=NEW)
        assert seen == [NEW]
        assert not exists(backend, "vm-1")
        del dom
    finally:
        await backend.aclose()


class _Spy:
    """A domain whose ``destroy`` first reports what the metadata records."""

    def __init__(self, dom: libvirt.virDomain, before_destroy: object) -> None:
        self._dom = dom
        self._before = before_destroy

    def destroy(self) -> int:
        assert callable(self._before)
        self._before()
        return int(self._dom.destroy())

    def __getattr__(self, name: str) -> object:
        return getattr(self._dom, name)


async def test_two_backend_objects_one_hypervisor(tmp_path: Path) -> None:
    """Two hosts' backends on one hypervisor (``test:///default``): the fence lives on the
    domain, not in either process."""
    pool = unique_pool()
    raw = options("test:///default")
    keeper = await asyncio.to_thread(libvirt.open, "test:///default")
    a, on_a = make(tmp_path / "a", raw, pool)
    b, on_b = make(tmp_path / "b", raw, pool)
    name = f"{pool}-1"
    try:
        handle = await on_a.spawn(vm(name, pool=pool), fence=OLD)
        # B takes over the termination: its token is recorded, then the domain destroyed
        await on_b.terminate(Handle.from_json(handle.to_json()), fence=NEW)
        assert name not in {d.name() for d in keeper.listAllDomains()}
        # A wakes and retries its spawn, whose domain B already terminated: nothing to fence
        # (the leak sweep removes such a late domain; docs/cluster.md "Limits")
        await on_a.terminate(handle, fence=OLD)
    finally:
        await a.aclose()
        await b.aclose()
        keeper.close()


def test_the_mark_round_trips_its_fence() -> None:
    from corral.backends.libvirt.spec import Mark

    mark = Mark("p", "vm-1", "h0", 4, Fence(12, "build-01#3"))
    assert domxml.parse_mark(domxml.mark_xml(mark)) == mark
    plain = Mark("p", "vm-1", "h0", 4)
    assert domxml.parse_mark(domxml.mark_xml(plain)) == plain
    damaged = domxml.mark_xml(mark).replace(">12<", ">twelve<")
    assert domxml.parse_mark(damaged) == plain  # an unreadable fence is no fence


async def test_guard_without_fencing_backend_ignores_the_fence(tmp_path: Path) -> None:
    from corral.backends import load_backend

    backend = load_backend("fake", {}, pool="p", base_dir=tmp_path)
    guarded = GuardedBackend(backend, call_timeout=5.0)
    handle = await guarded.spawn(vm("vm-1"), fence=NEW)
    await guarded.terminate(handle, fence=OLD)  # the fake checks nothing: unchanged
    assert not guarded.has(Capability.FENCING)
    await guarded.aclose()
