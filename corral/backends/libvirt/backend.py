"""The libvirt backend (``type: libvirt``): real VMs on one or more hypervisors (SPEC §6).

The I/O shell around the pure parts: :mod:`.options` validates and normalises the template,
:mod:`.hypervisors` places each VM and bounds creations, :mod:`.domxml` writes the domain XML,
:mod:`.states` names the VM's state from libvirt's lifecycle events, :mod:`.storage` makes and
removes the per-VM files. Every libvirt call runs in the backend's bounded thread pool
(``run_blocking``), never on the event loop; creations (the slow ``define`` and ``start``) run on
threads of their own, as many as the hypervisors' creation slots, so polls and livechecks never
queue behind them. A domain found with this pool's mark is kept (``virDomain`` names it by UUID:
a domain removed and defined again under the same name is not mistaken for it), so a poll costs one
call to libvirt, not a lookup, a metadata read and a state call.

Order of a spawn (so that nothing is ever lost): the VM's folder is created first, then the domain
is defined with corral's mark, then started. ``list`` reports marked domains of this pool *and*
folders without a domain, so reconciliation finds and ``terminate`` removes the leftovers of a
spawn interrupted at any point. ``terminate`` touches a domain only if it carries this pool's mark.

Fencing (``FENCING``, :mod:`corral.backends.fencing`): a spawn writes the caller's fence into the
mark of the domain it defines (the same ``defineXML``). Before a terminate destroys a domain, or a
retried spawn reuses one, the mark is read afresh: a fence older than the domain's is refused
with ``StaleFence`` and nothing is touched; a newer one is written first (``setMetadata``) and
read back, so that a concurrent newer holder's write is seen before acting. libvirt has no
compare-and-set on metadata: the window left is between that read-back and the destroy.

This module must not decide placement, normalise devices or build XML itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import ClassVar, TypeVar

import libvirt

from corral import exceptions
from corral.backends import fencing
from corral.backends.base import (
    BackendOptions,
    Capability,
    CapacityOptions,
    Fence,
    FencedBackend,
    Handle,
    PollResult,
    PollStatus,
    VMSpec,
    is_valid_address,
)
from corral.backends.libvirt import cloudinit, domxml, events, spec, states, storage
from corral.backends.libvirt.hypervisors import Placement
from corral.backends.libvirt.options import LibvirtOptions

T = TypeVar("T")

UNLIMITED_VCPUS = 1_000_000
"""vCPUs are overcommitted freely unless a hypervisor's ``capacity`` limits them."""

_ADDRESS_SOURCES = {
    "lease": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
    "agent": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT,
    "arp": libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP,
}
_GONE = {libvirt.VIR_ERR_NO_DOMAIN}
_NOT_RUNNING = {libvirt.VIR_ERR_OPERATION_INVALID}


def encode_ref(hypervisor: str, id_in_pool: int) -> str:
    """A handle's ``ref``: the hypervisor the VM is on and its id in the pool."""
    return json.dumps({"hypervisor": hypervisor, "id_in_pool": id_in_pool}, sort_keys=True)


def decode_ref(ref: str) -> str | None:
    """The hypervisor id in a ``ref`` (``None`` when absent or unreadable; never raises)."""
    try:
        data = json.loads(ref) if ref else {}
    except ValueError:
        return None
    value = data.get("hypervisor") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


def _positive(template: Mapping[str, object], key: str) -> int:
    value = template.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise exceptions.ConfigError(f"template.{key} must be a positive integer (got {value!r})")
    return value


class LibvirtBackend(FencedBackend):
    """VMs defined and started through libvirt on the pool's hypervisors (type ``libvirt``)."""

    type_name: ClassVar[str] = "libvirt"
    options_model: ClassVar[type[BackendOptions]] = LibvirtOptions

    def __init__(self, options: BackendOptions, *, pool: str, base_dir: Path | None = None) -> None:
        """Bind to the options; nothing is opened until the first call."""
        if not isinstance(options, LibvirtOptions):
            raise exceptions.ConfigError("LibvirtBackend needs LibvirtOptions")
        super().__init__(options, pool=pool, base_dir=base_dir)
        self.capabilities = self.capabilities | {Capability.LIVECHECK, Capability.LIST}
        self._opts = options
        self.root = (self.base_dir / options.storage_dir).resolve()
        self.devices = options.domain.devices()
        self._ids = options.hypervisor_ids()
        self._uris = {hid: h.uri for hid, h in zip(self._ids, options.hypervisors, strict=True)}
        self._conns: dict[str, libvirt.virConnect] = {}
        self._conns_lock = threading.Lock()  # worker threads open connections
        self._callbacks: dict[str, int] = {}
        self._placement: Placement | None = None
        self._placement_lock = asyncio.Lock()
        self._marker = re.compile(options.readiness.marker)
        self.states: dict[str, states.VmState] = {}
        """Each known VM's named state (vdsm's), kept current by libvirt's lifecycle events."""
        self._addresses: dict[str, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._creations: dict[str, Future[None]] = {}
        self._creators: ThreadPoolExecutor | None = None
        self._domains: dict[tuple[str, str], libvirt.virDomain] = {}
        """Domains known to carry this pool's mark, by (hypervisor, name)."""
        events.ensure_event_thread()

    # --- connections and events --------------------------------------------------------------

    def _conn(self, hid: str) -> libvirt.virConnect:
        """The open connection to hypervisor ``hid`` (blocking: call from the thread pool)."""
        with self._conns_lock:
            conn = self._conns.get(hid)
            if conn is not None and conn.isAlive():
                return conn
            return self._open(hid)

    def _open(self, hid: str) -> libvirt.virConnect:
        try:
            conn = libvirt.open(self._uris[hid])
        except libvirt.libvirtError as exc:
            raise exceptions.BackendError(
                f"cannot connect to hypervisor {hid} ({self._uris[hid]}): {exc}"
            ) from exc
        self._conns[hid] = conn
        for key in [key for key in list(self._domains) if key[0] == hid]:
            del self._domains[key]  # they belong to the connection that died
        if self._loop is not None:
            self._callbacks[hid] = events.watch_lifecycle(conn, hid, self._loop, self._on_event)
        return conn

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return await self.run_blocking(fn, *args)

    def _on_event(self, hypervisor: str, name: str, code: int) -> None:
        """A lifecycle event (on the loop): move the VM's named state through the table."""
        if code == states.Event.UNDEFINED:
            # a domain defined again under this name (same UUID) must be looked up afresh
            self._domains.pop((hypervisor, name), None)
        current = self.states.get(name)
        if current is None:
            return  # not one of ours, or forgotten (terminated)
        try:
            event = states.Event(code)
        except ValueError:
            return
        self.states[name] = states.next_state(current, event, ready=name in self._addresses)

    def vm_state(self, name: str) -> states.VmState | None:
        """The named state of VM ``name`` (vdsm's), or ``None`` if this backend does not know it."""
        return self.states.get(name)

    def machine_state(self, name: str) -> str | None:
        """The named state as text (``Up``, ``Paused``, ...), for display beside the pool state."""
        state = self.states.get(name)
        return state.value if state is not None else None

    # --- placement ---------------------------------------------------------------------------

    async def _ready_placement(self) -> Placement:
        async with self._placement_lock:
            if self._placement is None:
                capacities, creations = await self._call(self._measure)
                placement = Placement(capacities, creations)
                for hid, name, memory_mib, vcpus in await self._call(self._existing):
                    placement.commit(name, hid, memory_mib, vcpus)
                self._placement = placement
            return self._placement

    def _measure(self) -> tuple[dict[str, CapacityOptions], dict[str, int]]:
        capacities: dict[str, CapacityOptions] = {}
        creations: dict[str, int] = {}
        for hid, hyp in zip(self._ids, self._opts.hypervisors, strict=True):
            info: list[int] | None = None
            if hyp.capacity is None or hyp.max_creations is None:
                info = self._conn(hid).getInfo()  # [model, memory MiB, cpus, ...]
            if hyp.capacity is not None:
                capacities[hid] = hyp.capacity
            elif info is not None:
                capacities[hid] = CapacityOptions(
                    memory_mib=int(info[1]), vcpus=UNLIMITED_VCPUS, overhead_mib=0
                )
            creations[hid] = hyp.max_creations or (max(1, int(info[2])) if info else 1)
        return capacities, creations

    def _existing(self) -> list[tuple[str, str, int, int]]:
        found = []
        for hid in self._ids:
            for dom, _mark in self._marked(hid):
                _state, max_kib, _mem, vcpus, _cpu = dom.info()
                found.append((hid, dom.name(), int(max_kib) // 1024, int(vcpus)))
        return found

    def _marked(self, hid: str) -> list[tuple[libvirt.virDomain, spec.Mark]]:
        result = []
        for dom in self._conn(hid).listAllDomains():
            mark = self._mark_of(dom)
            if mark is not None and mark.pool == self.pool:
                result.append((dom, mark))
        return result

    def _mark_of(self, dom: libvirt.virDomain) -> spec.Mark | None:
        try:
            text = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, domxml.METADATA_NS)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN_METADATA, *_GONE):
                return None
            raise
        return domxml.parse_mark(text)

    # --- spawn -------------------------------------------------------------------------------

    def domain_spec(
        self,
        vm: VMSpec,
        hypervisor: str,
        paths: list[str | None],
        log: str | None,
        fence: Fence | None = None,
    ) -> spec.DomainSpec:
        """The domain of ``vm`` on ``hypervisor`` with its files at ``paths`` (its mark
        recording ``fence``)."""
        domain = self._opts.domain
        boot = domain.boot
        return spec.DomainSpec(
            name=vm.name,
            uuid=spec.stable_uuid(self.pool, vm.name),
            memory_mib=_positive(vm.template, "memory_mib"),
            vcpus=_positive(vm.template, "vcpus"),
            mark=spec.Mark(self.pool, vm.name, hypervisor, vm.id_in_pool, fence),
            devices=spec.Devices(
                drives=self.devices.drives,
                nics=spec.bind_macs(self.devices.nics, self.pool, vm.name),
                controllers=self.devices.controllers,
                balloon=self.devices.balloon,
            ),
            domain_type=domain.domain_type,
            arch=domain.arch,
            machine=domain.machine,
            emulator=domain.emulator,
            kernel=boot.kernel,
            initrd=boot.initrd,
            cmdline=boot.cmdline,
            console_log=log,
            disk_paths=tuple(paths),
        )

    def _seed_files(self, vm: VMSpec) -> dict[str, str] | None:
        cloud = self._opts.domain.cloud_init
        if cloud is None:
            return None
        return {
            "meta-data": cloudinit.meta_data(vm.name, spec.stable_uuid(self.pool, vm.name)),
            "user-data": cloudinit.user_data(vm.name, cloud.ssh_authorized_keys, cloud.user_data),
        }

    def _fence(
        self, dom: libvirt.virDomain, operation: str, fence: Fence | None
    ) -> spec.Mark | None:
        """Check ``fence`` against the domain's mark, read afresh; record it when newer.

        ``StaleFence`` (nothing touched) if the domain records a newer token; else the mark
        now recorded, or ``None`` if the domain is not this pool's (or is gone).
        """
        mark = self._mark_of(dom)
        if mark is None or mark.pool != self.pool or fence is None:
            return mark
        fencing.admit(self.pool, operation, dom.name(), mark.fence, fence)
        if not fencing.must_record(mark.fence, fence, every_grant=True):
            return mark
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
        if dom.isActive():
            flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
        mark = dataclasses.replace(mark, fence=fence)
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_ELEMENT,
            domxml.mark_xml(mark),
            domxml.METADATA_PREFIX,
            domxml.METADATA_NS,
            flags,
        )
        # no compare-and-set on metadata: read back, so that a newer holder's concurrent write
        # is seen (and refused here) before this one acts
        again = self._mark_of(dom)
        if again is not None:
            fencing.admit(self.pool, operation, dom.name(), again.fence, fence)
        return again

    def _create(self, vm: VMSpec, hid: str, fence: Fence | None = None) -> None:
        folder = storage.vm_dir(self.root, self.pool, vm.name)
        conn = self._conn(hid)
        try:
            existing = conn.lookupByName(vm.name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() not in _GONE:
                raise
            existing = None
        if existing is not None:
            mark = self._fence(existing, "spawn", fence)
            if mark is None or mark.pool != self.pool:
                raise exceptions.BackendError(
                    f"hypervisor {hid} already has a domain {vm.name!r} that is not this pool's"
                )
            if existing.isActive():
                self._domains[hid, vm.name] = existing
                return  # a retried spawn: it is already running
        console = self._opts.readiness.method == "console"
        paths, log = storage.prepare(
            folder, self.devices.drives, seed_files=self._seed_files(vm), console=console
        )
        xml = domxml.build(self.domain_spec(vm, hid, paths, log, fence))
        dom = conn.defineXML(xml)
        self._domains[hid, vm.name] = dom
        dom.create()

    async def spawn(self, spec_: VMSpec, *, fence: Fence | None = None) -> Handle:
        """Place the VM, then (holding one of its hypervisor's creation slots) make its files,
        define and start its domain, its mark recording ``fence``. Returns once libvirt started
        it; ``poll`` says when it is up. A retried spawn finding the domain checks ``fence``.
        """
        memory, vcpus = _positive(spec_.template, "memory_mib"), _positive(spec_.template, "vcpus")
        for key in ("disks", "nics"):
            if spec_.template.get(key):  # silently dropping them would build another machine
                raise exceptions.ConfigError(
                    f"template.{key}: the libvirt backend takes its devices from "
                    f"backend.domain.{key} (normalised and checked at config check)"
                )
        placement = await self._ready_placement()
        hid = placement.admit(spec_.name, memory, vcpus)
        self.states[spec_.name] = states.VmState.WAIT_FOR_LAUNCH
        self._addresses.pop(spec_.name, None)
        async with placement.creating_on(hid):
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            # the creation's thread future is kept: a terminate (the rollback of a spawn the guard
            # timed out) waits for it, so it never runs before a late define and leaks the domain
            future = self._creator(placement).submit(self._create, spec_, hid, fence)
            self._creations[spec_.name] = future
            try:
                await asyncio.wrap_future(future)
            finally:
                if future.done() and self._creations.get(spec_.name) is future:
                    del self._creations[spec_.name]
        if self.states.get(spec_.name) is states.VmState.WAIT_FOR_LAUNCH:
            # the start event may still be on its way; the domain is running now
            self.states[spec_.name] = states.VmState.POWERING_UP
        return Handle(spec_.name, ref=encode_ref(hid, spec_.id_in_pool))

    # --- poll / livecheck -------------------------------------------------------------------

    def _creator(self, placement: Placement) -> ThreadPoolExecutor:
        """The threads for creations: one per creation slot of every hypervisor."""
        if self._creators is None:
            self._creators = ThreadPoolExecutor(
                max_workers=max(1, sum(placement.max_creations.values())),
                thread_name_prefix=f"corral-libvirt-{self.pool}-create",
            )
        return self._creators

    def _lookup(self, hid: str, name: str) -> libvirt.virDomain | None:
        """This pool's domain ``name`` on ``hid`` (the kept one if any), or ``None``."""
        kept = self._domains.get((hid, name))
        if kept is not None:
            return kept
        try:
            dom = self._conn(hid).lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() in _GONE:
                return None
            raise
        mark = self._mark_of(dom)
        if mark is None or mark.pool != self.pool:
            return None
        self._domains[hid, name] = dom
        return dom

    def _state(self, hid: str, name: str) -> tuple[libvirt.virDomain, int] | None:
        """The domain and its libvirt state; ``None`` if there is no such domain of this pool.

        A kept domain that fails (undefined, removed and defined again so that its UUID no longer
        exists, or its connection died) is forgotten and looked up afresh once.
        """
        kept = (hid, name) in self._domains
        dom = self._lookup(hid, name)
        if dom is None:
            return None
        try:
            return dom, int(dom.state()[0])
        except libvirt.libvirtError as exc:
            self._domains.pop((hid, name), None)
            if not kept:
                if exc.get_error_code() in _GONE:
                    return None
                raise
        # the kept domain is gone, or its connection died: once more, looked up afresh
        dom = self._lookup(hid, name)
        if dom is None:
            return None
        try:
            return dom, int(dom.state()[0])
        except libvirt.libvirtError as exc:
            self._domains.pop((hid, name), None)
            if exc.get_error_code() in _GONE:
                return None
            raise

    def _probe(self, hid: str, name: str) -> tuple[int, str | None] | None:
        """The domain's libvirt state and its address if known; ``None`` if there is no domain."""
        found = self._state(hid, name)
        if found is None:
            return None
        dom, state = found
        if state != libvirt.VIR_DOMAIN_RUNNING:
            return state, None
        method = self._opts.readiness.method
        if method == "console":
            text = storage.read_tail(
                storage.vm_dir(self.root, self.pool, name) / storage.CONSOLE_LOG
            )
            matches = list(self._marker.finditer(text))  # the last line wins (a reboot)
            return state, matches[-1].group("address") if matches else None
        try:
            interfaces = dom.interfaceAddresses(_ADDRESS_SOURCES[method])
        except libvirt.libvirtError:
            return state, None  # no lease / agent not up yet
        return state, _first_address(interfaces)

    def _hypervisor_of(self, handle: Handle) -> str | None:
        hid = decode_ref(handle.ref)
        return hid if hid in self._uris else None

    async def poll(self, handle: Handle) -> PollResult:
        """``UP`` with an address once the guest reported ready; ``FAILED`` if its domain is gone
        or shut off; else ``PENDING`` with the configured ``retry_after``."""
        name = handle.name
        known = self.states.get(name)
        if name in self._addresses and known is states.VmState.UP:
            return PollResult(PollStatus.UP, address=self._addresses[name])
        hid = self._hypervisor_of(handle)
        if hid is None:
            return PollResult(PollStatus.FAILED, reason=f"no hypervisor recorded for {name}")
        probe = await self._call(self._probe, hid, name)
        if probe is None:
            self.states[name] = states.VmState.DOWN
            return PollResult(PollStatus.FAILED, reason=f"domain {name} is gone from {hid}")
        code, address = probe
        state = states.from_domain_state(code, ready=address is not None)
        if state is states.VmState.DOWN:
            self.states[name] = state
            return PollResult(PollStatus.FAILED, reason=f"domain {name} is Down on {hid}")
        if address is None or not is_valid_address(address):
            self.states.setdefault(name, state)
            return PollResult(PollStatus.PENDING, retry_after=self._opts.poll_retry)
        self._addresses[name] = address
        self.states[name] = states.next_state(
            self.states.get(name, state), states.Event.GUEST_READY, ready=True
        )
        return PollResult(PollStatus.UP, address=address)

    async def livecheck(self, handle: Handle) -> bool:
        """Alive when the VM's domain exists, carries this pool's mark and is running."""
        hid = self._hypervisor_of(handle)
        if hid is None:
            return False
        probe = await self._call(self._probe_state, hid, handle.name)
        return probe is not None and probe == int(libvirt.VIR_DOMAIN_RUNNING)

    def _probe_state(self, hid: str, name: str) -> int | None:
        found = self._state(hid, name)
        return None if found is None else found[1]

    # --- terminate / list -------------------------------------------------------------------

    def _destroy(self, hids: list[str], name: str, fence: Fence | None = None) -> None:
        for hid in hids:
            self._domains.pop((hid, name), None)  # look it up afresh: terminate must not miss it
            dom = self._lookup(hid, name)
            self._domains.pop((hid, name), None)
            if dom is None:
                continue
            if fence is not None:
                try:
                    self._fence(dom, "terminate", fence)
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() not in _GONE:
                        raise
                    continue  # undefined meanwhile: nothing left to fence or destroy
            try:
                dom.destroy()
            except libvirt.libvirtError as exc:
                if exc.get_error_code() not in _NOT_RUNNING | _GONE:
                    raise
            _undefine(dom)
        storage.remove(storage.vm_dir(self.root, self.pool, name))

    async def terminate(self, handle: Handle, *, fence: Fence | None = None) -> None:
        """Destroy and undefine the domain (only if it is this pool's), then delete its files.

        Idempotent. A handle without a hypervisor (a leftover folder, or an unknown VM) is looked
        for on every hypervisor. With ``fence``: ``StaleFence`` (nothing touched) when the
        domain records a newer token; else the domain records ``fence`` before it is destroyed.
        """
        creation = self._creations.pop(handle.name, None)
        if creation is not None:  # a creation still running in its thread: let it end first
            await asyncio.wait([asyncio.wrap_future(creation)])
        hid = self._hypervisor_of(handle)
        hids = [hid] if hid is not None else list(self._ids)
        await self._call(self._destroy, hids, handle.name, fence)
        self.states.pop(handle.name, None)
        self._addresses.pop(handle.name, None)
        if self._placement is not None:
            self._placement.release(handle.name)

    def _inventory(self) -> list[Handle]:
        handles: dict[str, Handle] = {}
        for hid in self._ids:
            for dom, mark in self._marked(hid):
                handles[dom.name()] = Handle(dom.name(), ref=encode_ref(hid, mark.id_in_pool))
        for name in storage.leftovers(self.root, self.pool):
            handles.setdefault(name, Handle(name))
        return sorted(handles.values(), key=lambda h: h.name)

    async def list(self) -> list[Handle]:
        """This pool's domains (by corral's mark) on every hypervisor, and VM folders left by a
        spawn interrupted before its domain was defined (their handles carry no hypervisor)."""
        return await self._call(self._inventory)

    async def aclose(self) -> None:
        """Deregister the event callbacks and close every connection, then the thread pool."""
        if self._conns:
            await self._call(self._close_all)
        if self._creators is not None:
            self._creators.shutdown(wait=False, cancel_futures=True)
            self._creators = None
        await super().aclose()

    def _close_all(self) -> None:
        for hid, conn in list(self._conns.items()):
            callback = self._callbacks.pop(hid, None)
            try:
                if callback is not None:
                    conn.domainEventDeregisterAny(callback)
                conn.close()
            except libvirt.libvirtError:
                pass
        self._conns.clear()
        self._domains.clear()


_UNDEFINE_FLAGS = (
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
    | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
    | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM,
    libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA,
    0,
)
_UNSUPPORTED = {libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT}


def _undefine(dom: libvirt.virDomain) -> None:
    """Undefine with its managed save, snapshot metadata and NVRAM, with fewer flags where the
    driver refuses some (the test driver knows no NVRAM); a domain already gone is fine."""
    for flags in _UNDEFINE_FLAGS:
        try:
            dom.undefineFlags(flags)
            return
        except libvirt.libvirtError as exc:
            code = exc.get_error_code()
            if code in _GONE:
                return
            if code not in _UNSUPPORTED or flags == 0:
                raise


def _first_address(interfaces: dict[str, dict[str, object]] | None) -> str | None:
    """The first IPv4 address (else any address) of a domain's ``interfaceAddresses`` answer."""
    fallback = None
    for name, iface in sorted((interfaces or {}).items()):
        if name == "lo":
            continue
        addrs = iface.get("addrs")
        for addr in addrs if isinstance(addrs, list) else []:
            value = addr.get("addr") if isinstance(addr, dict) else None
            if not isinstance(value, str):
                continue
            if addr.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                return value
            fallback = fallback or value
    return fallback
