"""Domain XML from a :class:`~corral.backends.libvirt.spec.DomainSpec`, and corral's metadata mark.

The XML is built with the standard library's ElementTree (escaping, namespaces, well-formedness are
its job, never string formatting). Every domain carries a ``<corral:vm>`` element in
``<metadata>`` naming its pool, VM and hypervisor: ``list`` keeps only domains with this pool's
mark, so reconciliation never touches a domain corral did not make. With a fence, the element
also records the fencing token (``<corral:fence>``) and its holder (``<corral:fence_holder>``)
of the last lock grant acted on the domain (:mod:`corral.backends.fencing`).

Pure: no I/O, no libvirt import.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from corral.backends import fencing
from corral.backends.libvirt.spec import Devices, DomainSpec, Drive, Mark, Nic

METADATA_NS = "https://corral.invalid/xmlns/libvirt/vm/1"
"""The namespace URI of corral's ``<metadata>`` element (the key of ``virDomain.metadata``)."""
METADATA_PREFIX = "corral"


def mark_element(mark: Mark, *, namespaced: bool = True) -> ET.Element:
    """The ``<corral:vm>`` element recording which pool, VM and hypervisor a domain belongs to
    (and its fence). ``namespaced=False``: the bare element ``virDomain.setMetadata`` takes."""
    ns = f"{{{METADATA_NS}}}" if namespaced else ""
    vm = ET.Element(f"{ns}vm")
    for key, value in (
        ("pool", mark.pool),
        ("name", mark.vm),
        ("hypervisor", mark.hypervisor),
        ("id_in_pool", str(mark.id_in_pool)),
        *(
            (("fence", str(mark.fence.token)), ("fence_holder", mark.fence.holder))
            if mark.fence is not None
            else ()
        ),
    ):
        ET.SubElement(vm, f"{ns}{key}").text = value
    return vm


def mark_xml(mark: Mark) -> str:
    """The mark as the XML text ``virDomain.setMetadata`` takes: the element without its
    namespace (libvirt puts it in the namespace given as the call's ``uri``)."""
    return ET.tostring(mark_element(mark, namespaced=False), encoding="unicode")


def parse_mark(text: str | None) -> Mark | None:
    """Read a mark from ``virDomain.metadata``'s answer (or a whole domain XML); else ``None``.

    Anything malformed yields ``None``: a domain whose mark cannot be read is not corral's.
    """
    if not text:
        return None
    try:
        # the text comes from the hypervisor corral drives (libvirt's own answer), not a user
        root = ET.fromstring(text)  # noqa: S314
    except ET.ParseError:
        return None
    tag = f"{{{METADATA_NS}}}vm"
    if root.tag in (tag, "vm"):  # virDomain.metadata answers the element without its namespace
        node: ET.Element | None = root
    else:
        node = root.find(f"./metadata/{tag}")
    if node is None:
        return None
    ns = node.tag[: -len("vm")]

    def child(key: str) -> str | None:
        found = node.find(f"{ns}{key}")
        return found.text if found is not None and found.text else None

    pool, vm, hypervisor = child("pool"), child("name"), child("hypervisor")
    if pool is None or vm is None:
        return None
    try:
        id_in_pool = int(child("id_in_pool") or 0)
    except ValueError:
        id_in_pool = 0
    fence = fencing.parse(child("fence"), child("fence_holder"))
    return Mark(pool=pool, vm=vm, hypervisor=hypervisor or "", id_in_pool=id_in_pool, fence=fence)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def _os(domain: ET.Element, spec: DomainSpec) -> None:
    os_el = _sub(domain, "os")
    type_attrs = {"arch": spec.arch}
    if spec.machine:
        type_attrs["machine"] = spec.machine
    _sub(os_el, "type", "hvm", **type_attrs)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")


def _disk(devices: ET.Element, drive: Drive, path: str | None) -> None:
    disk = _sub(devices, "disk", type="file", device=drive.device)
    _sub(disk, "driver", name="qemu", type=drive.format)
    if path is not None:
        _sub(disk, "source", file=path)
    _sub(disk, "target", dev=drive.target, bus=drive.bus)
    if drive.readonly:
        _sub(disk, "readonly")


def _nic(devices: ET.Element, nic: Nic) -> None:
    iface = _sub(devices, "interface", type=nic.type)
    if nic.mac is not None:
        _sub(iface, "mac", address=nic.mac)
    if nic.type == "network":
        _sub(iface, "source", network=nic.source)
    elif nic.type == "bridge":
        _sub(iface, "source", bridge=nic.source)
    _sub(iface, "model", type=nic.model)


def _devices(domain: ET.Element, spec: DomainSpec, devices: Devices) -> None:
    dev = _sub(domain, "devices")
    if spec.emulator:
        _sub(dev, "emulator", spec.emulator)
    paths = list(spec.disk_paths) + [None] * (len(devices.drives) - len(spec.disk_paths))
    for drive, path in zip(devices.drives, paths, strict=False):
        _disk(dev, drive, path if path is not None else drive.source)
    for controller in devices.controllers:
        _sub(dev, "controller", type=controller, index="0")
    for nic in devices.nics:
        _nic(dev, nic)
    if spec.console_log:
        serial = _sub(dev, "serial", type="file")
        _sub(serial, "source", path=spec.console_log)
        _sub(serial, "target", port="0")
    else:
        serial = _sub(dev, "serial", type="pty")
        _sub(serial, "target", port="0")
    _sub(dev, "memballoon", model=devices.balloon)


def build(spec: DomainSpec) -> str:
    """The domain XML of one VM, with corral's mark in ``<metadata>``."""
    ET.register_namespace(METADATA_PREFIX, METADATA_NS)
    domain = ET.Element("domain", type=spec.domain_type)
    _sub(domain, "name", spec.name)
    _sub(domain, "uuid", spec.uuid)
    metadata = _sub(domain, "metadata")
    metadata.append(mark_element(spec.mark))
    _sub(domain, "memory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "currentMemory", str(spec.memory_mib), unit="MiB")
    _sub(domain, "vcpu", str(spec.vcpus))
    _os(domain, spec)
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")
    _devices(domain, spec, spec.devices)
    return ET.tostring(domain, encoding="unicode")
