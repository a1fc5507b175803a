"""A tiny real guest for the slow tests, built from Debian packages on this machine.

The cloud kernel (``linux-image-cloud-amd64``) and an initramfs made here from ``busybox-static``
and the kernel's virtio modules: its ``/init`` brings the NIC up with DHCP (QEMU's user network
answers 10.0.2.15) and prints ``CORRAL-READY <address>`` on the serial console, which corral's
``console`` readiness reads. No image is downloaded.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MODULES = [
    "drivers/virtio/virtio_ring",
    "drivers/virtio/virtio",
    "drivers/virtio/virtio_pci_legacy_dev",
    "drivers/virtio/virtio_pci_modern_dev",
    "drivers/virtio/virtio_pci",
    "net/core/failover",
    "drivers/net/net_failover",
    "drivers/net/virtio_net",
]

INIT = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mkdir -p /proc /sys /dev /tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do insmod /lib/modules/$m.ko 2>/dev/null; done
ip link set lo up
ip link set eth0 up
udhcpc -i eth0 -s /dhcp.sh -q -n -t 10 -T 1 >/dev/null 2>&1
addr=$(cat /tmp/address 2>/dev/null)
echo "CORRAL-READY ${{addr:-127.0.0.1}}" > /dev/ttyS0
while true; do sleep 3600; done
"""

DHCP_SCRIPT = """#!/bin/sh
case "$1" in
bound|renew) ifconfig "$interface" "$ip" netmask "$subnet"; echo "$ip" > /tmp/address ;;
esac
"""


CMDLINE = "console=ttyS0 quiet no_timer_check"
"""The guest's kernel command line. ``no_timer_check``: under TCG on a loaded machine the kernel's
IO-APIC timer check can fail and panic the guest at boot (seen with 4 guests on 2 busy cores)."""


@dataclass(frozen=True)
class Guest:
    """The files of the tiny guest."""

    kernel: Path
    initrd: Path


def available() -> str | None:
    """Why the guest cannot be built here, or ``None`` when it can."""
    if not glob.glob("/boot/vmlinuz-*-cloud-amd64"):
        return "no cloud kernel (apt-get install linux-image-cloud-amd64)"
    for tool in ("busybox", "cpio", "qemu-system-x86_64", "qemu-img"):
        if shutil.which(tool) is None and not Path(f"/bin/{tool}").exists():
            return f"{tool} is missing"
    return None


def build(folder: Path) -> Guest:
    """Build the initramfs in ``folder`` (once per folder) and return the guest's files."""
    source_kernel = Path(sorted(glob.glob("/boot/vmlinuz-*-cloud-amd64"))[-1])
    version = source_kernel.name.removeprefix("vmlinuz-")
    # a copy: libvirt's DAC driver relabels the files a guest uses; /boot stays untouched
    kernel = folder / "vmlinuz"
    initrd = folder / "initrd.cpio"
    if initrd.exists():
        return Guest(kernel, initrd)
    shutil.copy(source_kernel, kernel)
    kernel.chmod(0o644)
    root = folder / "root"
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "lib" / "modules").mkdir(parents=True, exist_ok=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, root / "bin" / "busybox")
    names = []
    for module in MODULES:
        source = Path(f"/usr/lib/modules/{version}/kernel/{module}.ko")
        if source.exists():
            name = source.stem
            shutil.copy(source, root / "lib" / "modules" / f"{name}.ko")
            names.append(name)
    (root / "init").write_text(INIT.format(modules=" ".join(names)), encoding="utf-8")
    (root / "dhcp.sh").write_text(DHCP_SCRIPT, encoding="utf-8")
    (root / "init").chmod(0o755)
    (root / "dhcp.sh").chmod(0o755)
    files = subprocess.run(["find", "."], cwd=root, capture_output=True, check=True).stdout
    archive = subprocess.run(
        ["cpio", "-o", "-H", "newc", "--quiet"],
        cwd=root,
        input=files,
        capture_output=True,
        check=True,
    ).stdout
    initrd.write_bytes(archive)
    initrd.chmod(0o644)
    return Guest(kernel, initrd)
