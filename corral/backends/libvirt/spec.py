"""The typed VM spec of the libvirt backend and its vdsm-style device normalisation (pure).

vdsm's ``Vm`` turned a loose parameter set into devices: drive indices filled in per bus (explicit
ones respected, the others taking the lowest free index), a default ``virtio-serial`` controller,
a memory balloon of model ``none`` unless one is asked for, NIC model aliases (``pv`` is
``virtio``). This module does the same on typed values, and refuses what vdsm let through (a
duplicate index, an unknown bus, more MAC addresses than NIC models) with a ``ConfigError`` that
names the device, so that a bad template fails at ``corral config check``, not inside libvirt.

Nothing here does I/O, reads a clock or imports libvirt: :mod:`.domxml` turns a :class:`DomainSpec`
into XML, :mod:`.backend` does the rest.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from corral import exceptions
from corral.backends.base import Fence

TARGET_PREFIX: dict[str, str] = {
    "virtio": "vd",
    "scsi": "sd",
    "sata": "sd",
    "usb": "sd",
    "ide": "hd",
}
"""Disk buses and the prefix of their target device names (``vda``, ``sda``, ``hda``)."""
MAX_INDEX: dict[str, int] = {"virtio": 255, "scsi": 255, "sata": 255, "usb": 255, "ide": 3}
"""The highest drive index per bus (IDE has two channels of two drives)."""

NIC_MODELS = frozenset({"virtio", "e1000", "e1000e", "rtl8139", "ne2k_pci", "pcnet", "vmxnet3"})
"""NIC models QEMU emulates and libvirt names."""
NIC_ALIASES: dict[str, str] = {"pv": "virtio"}
"""vdsm's model aliases: ``pv`` (paravirtual) is ``virtio``."""
NIC_TYPES = frozenset({"network", "bridge", "user"})
"""How a NIC is attached: a libvirt network, a host bridge, or QEMU's user-mode network."""
BALLOON_MODELS = frozenset({"none", "virtio"})
"""``none`` (vdsm's default: libvirt would otherwise add one) or a ``virtio`` balloon."""
DEFAULT_CONTROLLERS: tuple[str, ...] = ("virtio-serial",)
"""Controllers every domain gets (vdsm's default: the guest agent's channel needs it)."""
MAC_PREFIX = "52:54:00"
"""QEMU's locally administered OUI, used for generated MAC addresses."""

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_UUID_NAMESPACE = uuid.UUID("6c4f0f8e-5b0a-4d7e-9a53-0c3f9e2b7a11")


@dataclass(frozen=True, slots=True)
class DiskRequest:
    """One disk as the operator wrote it (index optional)."""

    bus: str = "virtio"
    index: int | None = None
    kind: str = "blank"
    """``overlay`` (copy-on-write over ``source``), ``blank`` (new, ``size_gib``), ``file``
    (``source`` attached as it is) or ``seed`` (the per-VM cloud-init image)."""
    source: str | None = None
    size_gib: float = 10.0
    format: str = "qcow2"
    readonly: bool = False
    device: str = "disk"


@dataclass(frozen=True, slots=True)
class Drive:
    """A normalised disk: its bus, a unique index on that bus and the target name derived."""

    bus: str
    index: int
    target: str
    kind: str
    source: str | None
    size_gib: float
    format: str
    readonly: bool
    device: str


@dataclass(frozen=True, slots=True)
class NicRequest:
    """One NIC as the operator wrote it (MAC optional: a stable one is generated per VM)."""

    type: str = "network"
    source: str = "default"
    model: str = "virtio"
    mac: str | None = None


@dataclass(frozen=True, slots=True)
class Nic:
    """A normalised NIC: a known model, and a MAC address once bound to a VM."""

    type: str
    source: str
    model: str
    mac: str | None


@dataclass(frozen=True, slots=True)
class Devices:
    """A template's normalised devices, the same for every VM of the pool."""

    drives: tuple[Drive, ...]
    nics: tuple[Nic, ...]
    controllers: tuple[str, ...] = DEFAULT_CONTROLLERS
    balloon: str = "none"


@dataclass(frozen=True, slots=True)
class Mark:
    """corral's metadata on a domain: which pool, VM and hypervisor it belongs to, and the
    fence of the last lock grant acted on it (``None``: never fenced)."""

    pool: str
    vm: str
    hypervisor: str
    id_in_pool: int = 0
    fence: Fence | None = None


@dataclass(frozen=True, slots=True)
class DomainSpec:
    """Everything :func:`corral.backends.libvirt.domxml.build` needs for one VM's domain."""

    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    mark: Mark
    devices: Devices
    domain_type: str = "kvm"
    arch: str = "x86_64"
    machine: str | None = None
    emulator: str | None = None
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    console_log: str | None = None
    """A file the serial console is written to (readiness by marker line), or a pty."""
    disk_paths: tuple[str | None, ...] = field(default=())
    """Per drive, the file this VM uses (overlays and blank disks are per VM)."""


def target_name(bus: str, index: int) -> str:
    """The guest device name of drive ``index`` on ``bus``: ``vda``, ``sdb``, ..., ``vdaa``."""
    prefix = TARGET_PREFIX[bus]
    letters = ""
    n = index
    while True:
        letters = chr(ord("a") + n % 26) + letters
        n = n // 26 - 1
        if n < 0:
            return prefix + letters


def assign_indices(disks: Sequence[tuple[str, int | None]]) -> list[int]:
    """Indices for ``(bus, index or None)`` pairs, vdsm's way, with its gaps closed.

    Explicit indices are kept (a duplicate on a bus, or a target name another bus already uses,
    is an error); every other disk takes, in order, the lowest index of its bus whose target name
    is still free. Errors name the disk by its position (``disks[2]``).
    """
    used: dict[str, set[int]] = {}
    targets: dict[str, int] = {}
    problems: list[str] = []
    for position, (bus, index) in enumerate(disks):
        where = f"disks[{position}]"
        if bus not in TARGET_PREFIX:
            known = ", ".join(sorted(TARGET_PREFIX))
            problems.append(f"{where}: unknown bus {bus!r} (known: {known})")
            continue
        if index is None:
            continue
        if index < 0 or index > MAX_INDEX[bus]:
            problems.append(
                f"{where}: index {index} out of range for bus {bus!r} (0..{MAX_INDEX[bus]})"
            )
            continue
        target = target_name(bus, index)
        if target in targets:
            problems.append(
                f"{where}: index {index} on bus {bus!r} is taken by disks[{targets[target]}] "
                f"(target {target})"
            )
            continue
        used.setdefault(bus, set()).add(index)
        targets[target] = position
    if problems:  # every problem at once, so one config check names them all
        raise exceptions.ConfigError("; ".join(problems))
    result: list[int] = []
    for position, (bus, index) in enumerate(disks):
        if index is None:
            index = _lowest_free(bus, used.setdefault(bus, set()), targets, position)
            targets[target_name(bus, index)] = position
            used[bus].add(index)
        result.append(index)
    return result


def _lowest_free(bus: str, used: set[int], targets: dict[str, int], position: int) -> int:
    for candidate in range(MAX_INDEX[bus] + 1):
        if candidate not in used and target_name(bus, candidate) not in targets:
            return candidate
    raise exceptions.ConfigError(f"disks[{position}]: no free index left on bus {bus!r}")


_DISK_KINDS = frozenset({"overlay", "blank", "file", "seed"})
_FORMATS = frozenset({"qcow2", "raw"})
_FORMAT_OF_KIND = {"overlay": "qcow2", "blank": "qcow2", "seed": "raw"}


def normalise_drives(disks: Sequence[DiskRequest]) -> tuple[Drive, ...]:
    """Check every disk and give each a unique index and target on its bus."""
    for position, disk in enumerate(disks):
        where = f"disks[{position}]"
        if disk.kind not in _DISK_KINDS:
            raise exceptions.ConfigError(f"{where}: unknown kind {disk.kind!r}")
        if disk.kind in ("overlay", "file") and not disk.source:
            raise exceptions.ConfigError(f"{where}: a {disk.kind} disk needs a source")
        if disk.format not in _FORMATS:
            raise exceptions.ConfigError(f"{where}: unknown format {disk.format!r} (qcow2, raw)")
        if disk.device not in ("disk", "cdrom"):
            raise exceptions.ConfigError(f"{where}: device must be disk or cdrom")
    indices = assign_indices([(disk.bus, disk.index) for disk in disks])
    return tuple(
        Drive(
            bus=disk.bus,
            index=index,
            target=target_name(disk.bus, index),
            kind=disk.kind,
            source=disk.source,
            size_gib=disk.size_gib,
            format=_FORMAT_OF_KIND.get(disk.kind, disk.format),
            readonly=disk.readonly or disk.kind == "seed" or disk.device == "cdrom",
            device=disk.device,
        )
        for disk, index in zip(disks, indices, strict=True)
    )


def nic_model(model: str, where: str = "nic") -> str:
    """The libvirt model for ``model``, aliases resolved; an unknown model is a ``ConfigError``."""
    resolved = NIC_ALIASES.get(model, model)
    if resolved not in NIC_MODELS:
        known = ", ".join(sorted(NIC_MODELS | set(NIC_ALIASES)))
        raise exceptions.ConfigError(f"{where}: unknown NIC model {model!r} (known: {known})")
    return resolved


def check_mac(mac: str, where: str = "nic") -> str:
    """``mac`` in lower case if it is a unicast MAC address, else a ``ConfigError``."""
    lowered = mac.lower()
    if not _MAC.match(lowered):
        raise exceptions.ConfigError(f"{where}: {mac!r} is not a MAC address (aa:bb:cc:dd:ee:ff)")
    if int(lowered[:2], 16) & 1:
        raise exceptions.ConfigError(f"{where}: {mac!r} is a multicast address")
    return lowered


def nics_from_lists(
    models: Sequence[str], macs: Sequence[str], networks: Sequence[str]
) -> list[NicRequest]:
    """vdsm's comma-list NIC form (``nicModel``, ``macAddr``, ``bridge``) as typed requests.

    One NIC per model. Fewer networks than models repeat the last network (vdsm's rule); more
    MACs or networks than models is an error. vdsm also repeated the last MAC, which gave two NICs
    the same address: here missing MACs are generated per VM instead.
    """
    if len(macs) > len(models):
        raise exceptions.ConfigError(
            f"nic_models: {len(macs)} MAC addresses for {len(models)} NIC models"
        )
    if len(networks) > len(models):
        raise exceptions.ConfigError(
            f"nic_models: {len(networks)} networks for {len(models)} NIC models"
        )
    nets = list(networks) or ["default"]
    nets += [nets[-1]] * (len(models) - len(nets))
    padded: list[str | None] = [*macs, *([None] * (len(models) - len(macs)))]
    return [
        NicRequest(type="network", source=net, model=model, mac=mac)
        for model, mac, net in zip(models, padded, nets, strict=True)
    ]


def normalise_nics(nics: Sequence[NicRequest]) -> tuple[Nic, ...]:
    """Check every NIC: a known type and model (aliases resolved), a valid and unique MAC."""
    seen: dict[str, int] = {}
    result = []
    for position, nic in enumerate(nics):
        where = f"nics[{position}]"
        if nic.type not in NIC_TYPES:
            known = ", ".join(sorted(NIC_TYPES))
            raise exceptions.ConfigError(f"{where}: unknown type {nic.type!r} (known: {known})")
        if nic.type != "user" and not nic.source:
            raise exceptions.ConfigError(f"{where}: a {nic.type} NIC needs a source")
        mac = None
        if nic.mac is not None:
            mac = check_mac(nic.mac, where)
            if mac in seen:
                raise exceptions.ConfigError(f"{where}: MAC {mac} is also nics[{seen[mac]}]'s")
            seen[mac] = position
        result.append(Nic(nic.type, nic.source, nic_model(nic.model, where), mac))
    return tuple(result)


def normalise_devices(
    disks: Sequence[DiskRequest], nics: Sequence[NicRequest], balloon: str = "none"
) -> Devices:
    """A template's devices, normalised: drives indexed, NICs checked, controllers, balloon."""
    if balloon not in BALLOON_MODELS:
        raise exceptions.ConfigError(f"balloon: unknown model {balloon!r} (none, virtio)")
    return Devices(
        drives=normalise_drives(disks),
        nics=normalise_nics(nics),
        controllers=DEFAULT_CONTROLLERS,
        balloon=balloon,
    )


def stable_mac(pool: str, vm: str, position: int) -> str:
    """A MAC address for NIC ``position`` of a VM, the same every time for the same names."""
    digest = hashlib.sha256(f"{pool}\0{vm}\0{position}".encode()).digest()
    return MAC_PREFIX + "".join(f":{byte:02x}" for byte in digest[:3])


def stable_uuid(pool: str, vm: str) -> str:
    """The domain UUID of a VM: derived from its names, so a retried define is the same domain."""
    return str(uuid.uuid5(_UUID_NAMESPACE, f"{pool}/{vm}"))


def bind_macs(nics: Sequence[Nic], pool: str, vm: str) -> tuple[Nic, ...]:
    """The NICs of one VM: configured MACs kept, the others generated stably from the names."""
    return tuple(
        nic
        if nic.mac is not None
        else Nic(nic.type, nic.source, nic.model, stable_mac(pool, vm, i))
        for i, nic in enumerate(nics)
    )
