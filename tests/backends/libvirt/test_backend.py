"""The libvirt backend on libvirt's test driver: files, reconciliation, capacity, several
hypervisors, restarts, named states from events, console readiness, config-check errors.

Breakages these catch: ``list`` returning domains without this pool's mark (reconciliation would
destroy them), ``terminate`` touching a foreign domain or leaving files, a spawn admitted past a
hypervisor's memory, placement ignoring the freer hypervisor, a restarted backend forgetting what
is committed, states not following libvirt's events, a bad template reaching libvirt.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import libvirt
import pytest

from corral import exceptions
from corral.backends import load_backend
from corral.backends.base import Fence, Handle, PollStatus, VMSpec
from corral.backends.guard import GuardedBackend
from corral.backends.libvirt import LibvirtBackend, domxml, spec
from corral.backends.libvirt.states import VmState
from corral.config import parse_config

from ..conftest import wait_for
from .conftest import options, private_hypervisor, unique_pool


def vm(name: str, memory_mib: int = 512, pool: str = "p") -> VMSpec:
    return VMSpec(
        name=name, pool=pool, id_in_pool=0, template={"memory_mib": memory_mib, "vcpus": 1}
    )


def make(
    tmp_path: Path, raw: dict[str, object], pool: str = "p"
) -> tuple[LibvirtBackend, GuardedBackend]:
    backend = load_backend("libvirt", raw, pool=pool, base_dir=tmp_path)
    assert isinstance(backend, LibvirtBackend)
    return backend, GuardedBackend(backend, call_timeout=10.0, poll_interval=0.01)


async def up(guarded: GuardedBackend, spec_: VMSpec) -> Handle:
    handle = await guarded.spawn(spec_)
    result = await guarded.wait_up(handle, timeout=10.0)
    assert result.status is PollStatus.UP, result
    return handle


def define_marked(backend: LibvirtBackend, name: str, pool: str) -> libvirt.virDomain:
    """A domain made behind corral's back (a leak), marked for ``pool``, on hypervisor h0."""
    domain = backend.domain_spec(vm(name, pool=pool), "h0", [], None)
    if pool != backend.pool:
        domain = spec.DomainSpec(**{**_fields(domain), "mark": spec.Mark(pool, name, "h0")})
    conn = backend._conns["h0"]
    dom = conn.defineXML(domxml.build(domain))
    dom.create()
    return dom


def _fields(domain: spec.DomainSpec) -> dict[str, object]:
    return {name: getattr(domain, name) for name in domain.__dataclass_fields__}


async def test_files_are_made_per_vm_and_removed_by_terminate(tmp_path: Path) -> None:
    raw = options(
        private_hypervisor(tmp_path),
        disks=[{"size_gib": 1}],
        cloud_init={"ssh_authorized_keys": ["ssh-ed25519 AAAA test"]},
    )
    backend, guarded = make(tmp_path, raw)
    try:
        handle = await up(guarded, vm("vm-1"))
        folder = tmp_path / "vms" / "p" / "vm-1"
        assert (folder / "vda.qcow2").read_bytes()[:4] == b"QFI\xfb"
        seed = (folder / "seed.iso").read_bytes()
        assert b"local-hostname" in seed and b"ssh-ed25519 AAAA test" in seed
        xml = backend._conns["h0"].lookupByName("vm-1").XMLDesc(0)
        assert str(folder / "seed.iso") in xml
        await guarded.terminate(handle)
        assert not folder.exists()
    finally:
        await backend.aclose()


async def test_list_shows_only_this_pools_marked_domains_and_leftover_folders(
    tmp_path: Path,
) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        await up(guarded, vm("vm-1"))
        conn = backend._conns["h0"]
        leaked = define_marked(backend, "leaked-1", "p")  # a spawn whose record was lost
        define_marked(backend, "other-1", "other-pool")  # another pool's VM on the same host
        foreign = conn.defineXML(
            "<domain type='test'><name>hand-made</name><memory>65536</memory>"
            "<os><type>hvm</type></os></domain>"
        )
        (tmp_path / "vms" / "p" / "half-spawned").mkdir(parents=True)  # killed before define
        listed = {h.name: h for h in await guarded.list()}
        assert set(listed) == {"vm-1", "leaked-1", "half-spawned"}
        for name in ("leaked-1", "half-spawned"):
            await guarded.terminate(listed[name])  # what reconciliation does
        assert {h.name for h in await guarded.list()} == {"vm-1"}
        with pytest.raises(libvirt.libvirtError, match="not found"):
            leaked.isActive()  # destroyed and undefined
        # terminate never touches a domain without this pool's mark, even by name
        await guarded.terminate(Handle("hand-made"))
        await guarded.terminate(Handle("other-1", ref='{"hypervisor": "h0"}'))
        assert foreign.name() in conn.listDefinedDomains()
        assert conn.lookupByName("other-1").isActive()
    finally:
        await backend.aclose()


async def test_capacity_admission_counts_memory_and_overhead(tmp_path: Path) -> None:
    raw = options(private_hypervisor(tmp_path))
    raw["hypervisors"] = [
        {
            "uri": raw["hypervisors"][0]["uri"],  # type: ignore[index]
            "capacity": {"memory_mib": 1280, "vcpus": 8, "overhead_mib": 128},
        }
    ]
    backend, guarded = make(tmp_path, raw)
    try:
        first = await up(guarded, vm("vm-1"))
        with pytest.raises(exceptions.CapacityExceeded, match="640 MiB committed"):
            await guarded.spawn(vm("vm-2", memory_mib=768))  # 640 + 768 + 128 > 1280
        assert {h.name for h in await guarded.list()} == {"vm-1"}  # nothing was created
        await guarded.terminate(first)
        await up(guarded, vm("vm-2", memory_mib=1152))  # exactly full
    finally:
        await backend.aclose()


async def test_default_capacity_is_the_hypervisors_memory(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path, memory_mib=1024)))
    try:
        await up(guarded, vm("vm-1"))
        await up(guarded, vm("vm-2"))
        with pytest.raises(exceptions.CapacityExceeded):
            await guarded.spawn(vm("vm-3"))
    finally:
        await backend.aclose()


async def test_vms_spread_over_several_hypervisors_by_free_memory(tmp_path: Path) -> None:
    small = private_hypervisor(tmp_path, "small", memory_mib=2048)
    large = private_hypervisor(tmp_path, "large", memory_mib=4096)
    raw = options(small, large)
    raw["hypervisors"] = [{"uri": small, "id": "small"}, {"uri": large, "id": "large"}]
    backend, guarded = make(tmp_path, raw)
    try:
        handles = [await up(guarded, vm(f"vm-{i}")) for i in range(6)]
        where = [backend._placement.where(h.name) if backend._placement else None for h in handles]
        # large has 4096 free, small 2048: large takes VMs until both have the same room left,
        # then a tie goes to the first configured
        assert where == ["large", "large", "large", "large", "small", "large"]
        for hid, conn_name in (("small", "small"), ("large", "large")):
            names = {d.name() for d in backend._conns[hid].listAllDomains()}
            assert names == {h.name for h, w in zip(handles, where, strict=True) if w == conn_name}
        assert len(await guarded.list()) == 6
        await asyncio.gather(*(guarded.terminate(h) for h in handles))
        assert await guarded.list() == []
    finally:
        await backend.aclose()


async def test_a_new_backend_object_finds_the_vms_and_their_commitment(tmp_path: Path) -> None:
    pool = unique_pool()
    raw = options("test:///default")
    raw["hypervisors"] = [{"uri": "test:///default", "capacity": {"memory_mib": 1536, "vcpus": 8}}]
    # the test driver's default hypervisor lives while any connection to it is open
    keeper = await asyncio.to_thread(libvirt.open, "test:///default")
    first, guarded = make(tmp_path, raw, pool)
    handles = [await up(guarded, vm(f"{pool}-{i}", pool=pool)) for i in range(2)]
    await first.aclose()
    second, again = make(tmp_path, raw, pool)
    try:
        assert {h.name for h in await again.list()} == {h.name for h in handles}
        restored = Handle.from_json(handles[0].to_json())
        assert (await again.poll(restored)).status is PollStatus.UP
        await up(again, vm(f"{pool}-2", pool=pool))  # 1536 MiB: the third 512 fits...
        with pytest.raises(exceptions.CapacityExceeded):  # ...a fourth does not: the two
            await again.spawn(vm(f"{pool}-3", pool=pool))  # found VMs were recommitted
        for handle in await again.list():
            await again.terminate(handle)
        assert await again.list() == []
    finally:
        await second.aclose()
        keeper.close()


async def test_named_states_follow_lifecycle_events(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        handle = await up(guarded, vm("vm-1"))
        assert backend.vm_state("vm-1") is VmState.UP
        dom = backend._conns["h0"].lookupByName("vm-1")
        await asyncio.to_thread(dom.suspend)
        await wait_for(lambda: backend.vm_state("vm-1") is VmState.PAUSED, what="Paused")
        await asyncio.to_thread(dom.resume)
        await wait_for(lambda: backend.vm_state("vm-1") is VmState.UP, what="Up again")
        await asyncio.to_thread(dom.destroy)  # the VM dies behind corral's back
        await wait_for(lambda: backend.vm_state("vm-1") is VmState.DOWN, what="Down")
        assert (await guarded.poll(handle)).status is PollStatus.FAILED
        assert await guarded.livecheck(handle) is False
        await guarded.terminate(handle)
        assert backend.vm_state("vm-1") is None
    finally:
        await backend.aclose()


async def test_console_readiness_waits_for_the_marker_line(tmp_path: Path) -> None:
    raw = {**options(private_hypervisor(tmp_path)), "readiness": {"method": "console"}}
    backend, guarded = make(tmp_path, raw)
    try:
        handle = await guarded.spawn(vm("vm-1"))
        log = tmp_path / "vms" / "p" / "vm-1" / "console.log"
        assert (await guarded.poll(handle)).status is PollStatus.PENDING
        assert backend.vm_state("vm-1") is VmState.POWERING_UP
        log.write_text("booting...\nCORRAL-READY 10.0.2.15\n", encoding="utf-8")
        result = await guarded.poll(handle)
        assert (result.status, result.address) == (PollStatus.UP, "10.0.2.15")
        assert backend.vm_state("vm-1") is VmState.UP
    finally:
        await backend.aclose()


def pool_config(domain: dict[str, object], **backend: object) -> dict[str, object]:
    raw = options("test:///default", **domain)
    raw.update(backend)
    return {"pools": {"lv": {"backend": {"type": "libvirt", **raw}}}}


@pytest.mark.parametrize(
    ("domain", "backend", "message"),
    [
        ({"disks": [{"bus": "floppy"}]}, {}, "disks[0]: unknown bus 'floppy'"),
        ({"disks": [{"index": 1}, {"index": 1}]}, {}, "disks[1]: index 1 on bus 'virtio' is taken"),
        (
            {"nics": [], "nic_models": ["pv"], "macs": ["52:54:00:00:00:01", "52:54:00:00:00:02"]},
            {},
            "2 MAC addresses for 1 NIC models",
        ),
        ({"nics": [{"model": "tulip"}]}, {}, "unknown NIC model 'tulip'"),
        ({"nics": [{"mac": "zz"}]}, {}, "is not a MAC address"),
        ({"boot": {}}, {}, "give boot.image"),
        ({"domain_type": "xen"}, {}, "domain.domain_type"),
        ({}, {"hypervisors": [{"uri": "qemu:/bad"}]}, "is not a libvirt URI"),
        (
            {},
            {
                "hypervisors": [
                    {"uri": "test:///default", "id": "a"},
                    {"uri": "test:///default", "id": "a"},
                ]
            },
            "ids must be unique",
        ),
        ({"nics": []}, {}, "readiness.method lease needs a NIC on a libvirt network"),
        ({}, {"readiness": {"method": "console", "marker": "READY"}}, "named group"),
        ({}, {"colour": "blue"}, "colour: unknown key"),
    ],
)
def test_bad_templates_fail_at_config_check(
    domain: dict[str, object], backend: dict[str, object], message: str
) -> None:
    with pytest.raises(exceptions.ConfigError) as caught:
        parse_config(pool_config(domain, **backend))
    assert "pools.lv.backend" in caught.value.message
    assert message in caught.value.message, caught.value.message


def test_a_good_template_passes_config_check() -> None:
    config = parse_config(pool_config({"disks": [{"bus": "scsi"}, {"bus": "sata"}]}))
    assert config.pool("lv").backend.type == "libvirt"


async def test_terminate_after_a_timed_out_spawn_waits_for_the_late_define(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the guard gives up on a slow spawn; its rollback terminates the VM by name while the
    # creation is still running in its thread: the domain it defines later must not survive
    backend, _ = make(tmp_path, options(private_hypervisor(tmp_path)))
    guarded = GuardedBackend(backend, call_timeout=10.0, timeouts={"spawn": 0.2})
    release = threading.Event()
    original = backend._create

    def slow_create(spec_: VMSpec, hid: str, fence: Fence | None = None) -> None:
        release.wait(10)
        original(spec_, hid, fence)

    monkeypatch.setattr(backend, "_create", slow_create)
    try:
        with pytest.raises(exceptions.BackendTimeout):
            await guarded.spawn(vm("vm-1"))
        terminating = asyncio.create_task(guarded.terminate(Handle("vm-1")))
        await asyncio.sleep(0.1)
        assert not terminating.done()  # waiting for the creation
        release.set()
        await terminating
        assert await guarded.list() == []
        assert backend.machine_state("vm-1") is None
    finally:
        release.set()
        await backend.aclose()


async def test_machine_state_is_the_named_state_as_text(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        assert backend.machine_state("vm-1") is None
        await up(guarded, vm("vm-1"))
        assert backend.machine_state("vm-1") == "Up"
    finally:
        await backend.aclose()


@pytest.mark.parametrize("method", ["lease", "agent", "arp"])
async def test_readiness_by_address_sources(tmp_path: Path, method: str) -> None:
    raw = {**options(private_hypervisor(tmp_path)), "readiness": {"method": method}}
    backend, guarded = make(tmp_path, raw)
    try:
        handle = await guarded.spawn(vm("vm-1"))
        result = await guarded.wait_up(handle, timeout=10.0)
        assert result.status is PollStatus.UP
        assert result.address is not None and result.address.startswith("192.168.122.")
    finally:
        await backend.aclose()


def test_first_address_prefers_ipv4_and_skips_loopback() -> None:
    from corral.backends.libvirt.backend import _first_address

    v6 = {"addr": "fe80::1", "prefix": 64, "type": libvirt.VIR_IP_ADDR_TYPE_IPV6}
    v4 = {"addr": "10.0.0.5", "prefix": 24, "type": libvirt.VIR_IP_ADDR_TYPE_IPV4}
    lo = {"addr": "127.0.0.1", "prefix": 8, "type": libvirt.VIR_IP_ADDR_TYPE_IPV4}
    assert _first_address({"lo": {"addrs": [lo]}, "eth0": {"addrs": [v6, v4]}}) == "10.0.0.5"
    assert _first_address({"eth0": {"addrs": [v6]}}) == "fe80::1"
    assert _first_address({"eth0": {"addrs": "garbage"}, "eth1": {}}) is None
    assert _first_address(None) is None


def test_config_check_lists_every_device_problem_at_once() -> None:
    domain = {
        "disks": [{"index": 1}, {"index": 1}, {"bus": "floppy"}],
        "nics": [],
        "nic_models": ["pv"],
        "macs": ["52:54:00:00:00:01", "52:54:00:00:00:02"],
        "balloon": "xen",
    }
    with pytest.raises(exceptions.ConfigError) as caught:
        parse_config(pool_config(domain))
    message = caught.value.message
    for part in (
        "disks[1]: index 1",
        "disks[2]: unknown bus 'floppy'",
        "2 MAC addresses",
        "balloon: unknown model 'xen'",
    ):
        assert part in message, message


async def test_template_devices_are_refused_with_where_they_belong(tmp_path: Path) -> None:
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        spec_ = VMSpec("vm-1", "p", 0, {"memory_mib": 512, "vcpus": 1, "disks": [{"bus": "ide"}]})
        with pytest.raises(exceptions.BackendError, match=r"ConfigError: .*backend\.domain\.disks"):
            await guarded.spawn(spec_)
        assert await guarded.list() == []
    finally:
        await backend.aclose()


async def test_a_poll_of_a_known_domain_makes_no_lookup(tmp_path: Path) -> None:
    """Breakage caught: every poll looking the domain up by name and reading its mark again
    (three calls to libvirtd per poll, which ate CPU the booting guests needed at 8 guests)."""
    raw = {**options(private_hypervisor(tmp_path)), "readiness": {"method": "console"}}
    backend, guarded = make(tmp_path, raw)
    try:
        handle = await guarded.spawn(vm("vm-1"))
        conn = backend._conns["h0"]
        lookups = 0
        original = conn.lookupByName

        def counting(name: str) -> libvirt.virDomain:
            nonlocal lookups
            lookups += 1
            return original(name)

        conn.lookupByName = counting  # type: ignore[method-assign]
        for _ in range(5):
            assert (await guarded.poll(handle)).status is PollStatus.PENDING
        assert lookups == 0
        assert await guarded.livecheck(handle) is True
        assert lookups == 0
    finally:
        await backend.aclose()


async def test_a_domain_redefined_under_the_same_name_is_not_taken_for_ours(
    tmp_path: Path,
) -> None:
    """Breakage caught: a kept domain object trusted after its domain was undefined behind
    corral's back and another (not this pool's) defined under the same name and UUID."""
    backend, guarded = make(tmp_path, options(private_hypervisor(tmp_path)))
    try:
        handle = await up(guarded, vm("vm-1"))
        conn = backend._conns["h0"]
        dom = conn.lookupByName("vm-1")
        await asyncio.to_thread(dom.destroy)
        await asyncio.to_thread(dom.undefine)
        await wait_for(lambda: ("h0", "vm-1") not in backend._domains, what="undefined event")
        define_marked(backend, "vm-1", "another-pool")
        assert await guarded.livecheck(handle) is False
        await guarded.terminate(handle)
        assert conn.lookupByName("vm-1").isActive()  # the foreign domain is untouched
    finally:
        await backend.aclose()


async def test_creations_run_at_once_up_to_the_creation_slots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Breakage caught: creations sharing the small general thread pool (``blocking_workers``),
    so four creations allowed by ``max_creations: 4`` ran one after another and polls queued
    behind them. With one general worker, the four creations must still meet at a barrier."""
    raw = options(private_hypervisor(tmp_path))
    raw["hypervisors"] = [{**raw["hypervisors"][0], "max_creations": 4}]  # type: ignore[index]
    raw["blocking_workers"] = 1
    backend, guarded = make(tmp_path, raw)
    barrier = threading.Barrier(4, timeout=10)
    original = backend._create

    def meeting_create(spec_: VMSpec, hid: str, fence: Fence | None = None) -> None:
        barrier.wait()  # raises BrokenBarrierError if the four never run together
        original(spec_, hid, fence)

    monkeypatch.setattr(backend, "_create", meeting_create)
    try:
        handles = await asyncio.gather(*(guarded.spawn(vm(f"vm-{i}", 256)) for i in range(4)))
        assert sorted(h.name for h in handles) == [f"vm-{i}" for i in range(4)]
    finally:
        barrier.abort()
        await backend.aclose()
