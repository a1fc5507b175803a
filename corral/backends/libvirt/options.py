"""The libvirt backend's options (``type: libvirt``): hypervisors, the domain template, readiness.

A pydantic model, frozen, unknown keys forbidden. Its validators run the pure normalisation of
:mod:`.spec` so that a bad template (unknown bus, duplicate drive index, more MACs than NIC
models, a bad MAC) is refused when the configuration is checked (``corral config check``), with
the offending key named, and never reaches libvirt.

No I/O here: paths are checked for shape only (whether a base image exists is the spawn's
business, since the hypervisor may see other files than the controller's host).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import pydantic

from corral import exceptions
from corral.backends.base import BackendOptions, CapacityOptions
from corral.backends.libvirt import spec

_HYPERVISOR_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
Path_ = Annotated[str, pydantic.Field(min_length=1, max_length=4096)]


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)


class HypervisorOptions(_Frozen):
    """One hypervisor: a libvirt URI, and optionally its capacity and creation bound."""

    uri: str = pydantic.Field(min_length=1, max_length=2048)
    """``qemu:///system``, ``qemu+ssh://host/system``, ``qemu:///embed?root=DIR``, ``test:///default``."""
    id: str | None = None
    """The hypervisor's name in corral's metadata and messages (default: ``h0``, ``h1``, ...)."""
    capacity: CapacityOptions | None = None
    """Memory and vCPUs the pool's VMs may commit here; default: libvirt's host info."""
    max_creations: int | None = pydantic.Field(default=None, ge=1, le=1024)
    """Creations in flight at most on this hypervisor (vdsm's ``_ongoingCreations``);
    default: its CPU count."""

    @pydantic.field_validator("uri")
    @classmethod
    def _uri(cls, value: str) -> str:
        if "://" not in value or any(c.isspace() for c in value):
            raise ValueError(f"{value!r} is not a libvirt URI (e.g. qemu:///system)")
        return value

    @pydantic.field_validator("id")
    @classmethod
    def _id(cls, value: str | None) -> str | None:
        if value is not None and not _HYPERVISOR_ID.match(value):
            raise ValueError("letters, digits, '_', '.', '-' (at most 64)")
        return value


class BootOptions(_Frozen):
    """How the guest boots: a base image (per-VM copy-on-write overlay) or a kernel."""

    image: Path_ | None = None
    """A qcow2 (or raw) base image; each VM boots from its own qcow2 overlay over it."""
    image_format: Literal["qcow2", "raw"] = "qcow2"
    image_bus: str = "virtio"
    kernel: Path_ | None = None
    """Direct kernel boot: the kernel, an optional initrd and command line."""
    initrd: Path_ | None = None
    cmdline: str | None = pydantic.Field(default=None, max_length=4096)

    @pydantic.model_validator(mode="after")
    def _one_way(self) -> BootOptions:
        if self.image is None and self.kernel is None:
            raise ValueError("give boot.image (a base image) or boot.kernel (direct kernel boot)")
        if self.kernel is None and (self.initrd is not None or self.cmdline is not None):
            raise ValueError("boot.initrd and boot.cmdline need boot.kernel")
        return self


class DiskOptions(_Frozen):
    """An extra disk: a new blank one of ``size_gib`` per VM, or an existing file (``source``)."""

    bus: str = "virtio"
    index: int | None = pydantic.Field(default=None, ge=0)
    size_gib: float = pydantic.Field(default=10.0, gt=0, allow_inf_nan=False)
    source: Path_ | None = None
    """Attach this file as it is (read-only unless ``readonly: false``) instead of a new disk."""
    format: Literal["qcow2", "raw"] = "raw"
    readonly: bool | None = None
    device: Literal["disk", "cdrom"] = "disk"


class NicOptions(_Frozen):
    """A NIC on a libvirt network, a host bridge, or QEMU's user network."""

    type: str = "network"
    source: str = pydantic.Field(default="default", max_length=255)
    model: str = "virtio"
    mac: str | None = None
    """A fixed MAC address (only sensible for a pool of one VM); default: stable per VM."""


class CloudInitOptions(_Frozen):
    """A NoCloud seed generated per VM: hostname (the VM name), SSH keys, user data."""

    ssh_authorized_keys: tuple[str, ...] = ()
    user_data: str | None = pydantic.Field(default=None, max_length=1_000_000)
    """Cloud-config text (``#cloud-config ...``); the SSH keys and hostname are merged in."""
    bus: str = "virtio"


class DomainOptions(_Frozen):
    """The libvirt-specific part of a VM (memory and vCPUs come from the pool's ``template``)."""

    domain_type: Literal["kvm", "qemu"] = "kvm"
    """``kvm`` needs /dev/kvm; ``qemu`` is software emulation (TCG)."""
    arch: str = pydantic.Field(default="x86_64", pattern=r"^[a-z0-9_]{1,32}$")
    machine: str | None = pydantic.Field(default=None, pattern=r"^[a-z0-9_.-]{1,64}$")
    emulator: Path_ | None = None
    boot: BootOptions
    disks: tuple[DiskOptions, ...] = ()
    nics: tuple[NicOptions, ...] = ()
    nic_models: tuple[str, ...] = ()
    """vdsm's list form: one NIC per model, with ``macs`` and ``networks`` (instead of ``nics``)."""
    macs: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    balloon: str = "none"
    cloud_init: CloudInitOptions | None = None

    @pydantic.model_validator(mode="after")
    def _normalise(self) -> DomainOptions:
        # run the normalisation here, so that every problem surfaces at config check: drives,
        # NICs and the balloon separately, each one's problem listed
        checks = (
            lambda: spec.normalise_drives(self.disk_requests()),
            lambda: spec.normalise_nics(self.nic_requests()),
            lambda: spec.normalise_devices([], [], self.balloon),
        )
        problems = []
        for check in checks:
            try:
                check()
            except exceptions.ConfigError as exc:
                problems.append(exc.message)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def disk_requests(self) -> list[spec.DiskRequest]:
        """The boot image, the extra disks and the seed as normalisation input, in that order."""
        requests: list[spec.DiskRequest] = []
        if self.boot.image is not None:
            requests.append(
                spec.DiskRequest(
                    bus=self.boot.image_bus,
                    kind="overlay",
                    source=self.boot.image,
                    format="qcow2",
                )
            )
        for disk in self.disks:
            requests.append(
                spec.DiskRequest(
                    bus=disk.bus,
                    index=disk.index,
                    kind="file" if disk.source is not None else "blank",
                    source=disk.source,
                    size_gib=disk.size_gib,
                    format=disk.format,
                    readonly=disk.readonly
                    if disk.readonly is not None
                    else disk.source is not None,
                    device=disk.device,
                )
            )
        if self.cloud_init is not None:
            requests.append(
                spec.DiskRequest(bus=self.cloud_init.bus, kind="seed", format="raw", readonly=True)
            )
        return requests

    def nic_requests(self) -> list[spec.NicRequest]:
        """The NICs as normalisation input, from ``nics`` or vdsm's list form."""
        if self.nics and (self.nic_models or self.macs or self.networks):
            raise exceptions.ConfigError("give either nics or nic_models/macs/networks, not both")
        if not self.nic_models and (self.macs or self.networks):
            raise exceptions.ConfigError(
                f"nic_models: {len(self.macs)} MAC addresses and {len(self.networks)} networks "
                "for 0 NIC models"
            )
        if self.nic_models:
            return spec.nics_from_lists(self.nic_models, self.macs, self.networks)
        return [spec.NicRequest(n.type, n.source, n.model, n.mac) for n in self.nics]

    def devices(self) -> spec.Devices:
        """The normalised devices (raises ``ConfigError`` naming the bad one)."""
        return spec.normalise_devices(self.disk_requests(), self.nic_requests(), self.balloon)


class ReadinessOptions(_Frozen):
    """How corral learns that a VM is up and its address."""

    method: Literal["console", "lease", "agent", "arp"] = "lease"
    """``console``: a marker line on the serial console (logged to a file); ``lease``: the
    libvirt network's DHCP lease; ``agent``: the QEMU guest agent; ``arp``: the host's ARP table."""
    marker: str = r"CORRAL-READY\s+(?P<address>\S+)"
    """For ``console``: a regular expression with an ``address`` group."""

    @pydantic.field_validator("marker")
    @classmethod
    def _marker(cls, value: str) -> str:
        try:
            pattern = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        if "address" not in pattern.groupindex:
            raise ValueError("the marker needs a named group (?P<address>...)")
        return value


class LibvirtOptions(BackendOptions):
    """Options of the ``libvirt`` backend."""

    hypervisors: tuple[HypervisorOptions, ...] = pydantic.Field(min_length=1, max_length=256)
    """Where VMs run; each spawn goes to the one with the most free committed memory."""
    domain: DomainOptions
    readiness: ReadinessOptions = ReadinessOptions()
    storage_dir: Path_ = ".corral/libvirt"
    """Where per-VM files go (overlays, blank disks, seeds, console logs), one folder per VM,
    relative to the config file's folder. Hypervisors must see the same path (local or shared)."""
    poll_retry: float = pydantic.Field(default=0.5, gt=0, le=60)
    """The ``retry_after`` hint of a pending poll, in seconds."""

    @pydantic.model_validator(mode="after")
    def _unique_ids(self) -> LibvirtOptions:
        ids = self.hypervisor_ids()
        if len(set(ids)) != len(ids):
            raise ValueError(f"hypervisors: ids must be unique (got {ids})")
        if self.readiness.method == "lease" and not any(
            nic.type == "network" for nic in self.domain.devices().nics
        ):
            raise ValueError("readiness.method lease needs a NIC on a libvirt network")
        return self

    def hypervisor_ids(self) -> list[str]:
        """Each hypervisor's id, ``h<position>`` where none is given."""
        return [h.id if h.id is not None else f"h{i}" for i, h in enumerate(self.hypervisors)]
