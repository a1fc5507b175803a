"""Domain XML: corral's mark round-trips, and every generated domain is one libvirt accepts —
by ``defineXML`` on the test driver and by its schema validator ``virt-xml-validate``.

Breakages these catch: a device element libvirt's schema refuses (a wrong attribute, a missing
target), names or command lines not escaped, the mark missing from ``<metadata>``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import libvirt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corral.backends.libvirt import domxml, spec


def _spec(devices: spec.Devices, name: str = "vm-1", **extra: object) -> spec.DomainSpec:
    defaults: dict[str, object] = {
        "kernel": "/boot/vmlinuz",
        "cmdline": "console=ttyS0",
        "console_log": "/var/tmp/vm-1/console.log",
    }
    defaults.update(extra)
    paths = tuple(f"/var/tmp/{name}/{d.target}.img" for d in devices.drives)
    return spec.DomainSpec(
        name=name,
        uuid=spec.stable_uuid("p", name),
        memory_mib=256,
        vcpus=1,
        mark=spec.Mark("p", name, "h0", 3),
        devices=spec.Devices(
            devices.drives,
            spec.bind_macs(devices.nics, "p", name),
            devices.controllers,
            devices.balloon,
        ),
        domain_type="qemu",
        disk_paths=paths,
        **defaults,  # type: ignore[arg-type]
    )


def test_mark_round_trips_through_the_domain_and_metadata_forms() -> None:
    mark = spec.Mark("fedora-x86", "fedora-x86-0007", "h1", 7)
    xml = domxml.build(_spec(spec.normalise_devices([], []), name=mark.vm))
    assert domxml.parse_mark(xml) == spec.Mark("p", mark.vm, "h0", 3)
    assert domxml.parse_mark(domxml.mark_xml(mark)) == mark
    # libvirt's virDomain.metadata answers the element without its namespace
    plain = "<vm><pool>a</pool><name>b</name><hypervisor>h2</hypervisor></vm>"
    assert domxml.parse_mark(plain) == spec.Mark("a", "b", "h2", 0)


@pytest.mark.parametrize("text", [None, "", "<vm>", "<domain/>", "<vm><pool>a</pool></vm>"])
def test_anything_without_a_whole_mark_is_not_corrals(text: str | None) -> None:
    assert domxml.parse_mark(text) is None


def test_example_domain_shape() -> None:
    devices = spec.normalise_devices(
        [spec.DiskRequest(kind="overlay", source="/img/base.qcow2"), spec.DiskRequest(bus="ide")],
        [spec.NicRequest(model="pv")],
    )
    xml = domxml.build(_spec(devices, cmdline="a=<b> & c"))
    assert '<target dev="vda" bus="virtio" />' in xml
    assert '<target dev="hda" bus="ide" />' in xml
    assert '<controller type="virtio-serial" index="0" />' in xml
    assert '<memballoon model="none" />' in xml
    assert '<model type="virtio" />' in xml
    assert "<cmdline>a=&lt;b&gt; &amp; c</cmdline>" in xml


buses = st.sampled_from(["virtio", "scsi", "sata", "ide", "usb"])
disks = st.lists(
    st.builds(
        spec.DiskRequest,
        bus=buses,
        index=st.none(),
        kind=st.sampled_from(["blank", "file", "seed"]),
        source=st.just("/var/tmp/x.img"),
        format=st.sampled_from(["raw", "qcow2"]),
        device=st.sampled_from(["disk", "disk", "cdrom"]),
    ),
    max_size=4,
)
nics = st.lists(
    st.builds(
        spec.NicRequest,
        type=st.sampled_from(["network", "bridge", "user"]),
        source=st.sampled_from(["default", "br0"]),
        model=st.sampled_from(sorted(spec.NIC_MODELS | set(spec.NIC_ALIASES))),
    ),
    max_size=3,
)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=30).filter(
    lambda s: s[0].isalnum()
)


@pytest.fixture(scope="module")
def conn() -> libvirt.virConnect:
    return libvirt.open("test:///default")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(disks, nics, st.sampled_from(["none", "virtio"]), names, st.booleans())
def test_property_every_generated_domain_is_defined_by_libvirt(
    conn: libvirt.virConnect,
    disk_list: list[spec.DiskRequest],
    nic_list: list[spec.NicRequest],
    balloon: str,
    name: str,
    kernel: bool,
) -> None:
    devices = spec.normalise_devices(disk_list, nic_list, balloon)
    extra: dict[str, object] = {} if kernel else {"kernel": None, "cmdline": None}
    xml = domxml.build(_spec(devices, name=f"h-{name}", **extra))
    dom = conn.defineXML(xml)
    try:
        back = dom.XMLDesc(0)
        assert domxml.parse_mark(back) == spec.Mark("p", f"h-{name}", "h0", 3)
        assert back.count("<disk ") == len(devices.drives)
        assert back.count("<interface ") == len(devices.nics)
    finally:
        dom.undefine()


@pytest.mark.skipif(shutil.which("virt-xml-validate") is None, reason="virt-xml-validate missing")
@settings(max_examples=15, deadline=None)
@given(disks, nics, st.sampled_from(["none", "virtio"]), names)
def test_property_every_generated_domain_passes_libvirts_schema(
    tmp_path_factory: pytest.TempPathFactory,
    disk_list: list[spec.DiskRequest],
    nic_list: list[spec.NicRequest],
    balloon: str,
    name: str,
) -> None:
    devices = spec.normalise_devices(disk_list, nic_list, balloon)
    path = Path(tmp_path_factory.mktemp("xml")) / "domain.xml"
    path.write_text(domxml.build(_spec(devices, name=f"h-{name}")), encoding="utf-8")
    done = subprocess.run(
        ["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr + path.read_text()
