"""Fixtures of the libvirt backend's tests: private test-driver hypervisors and ready options.

``test:///<file>`` gives each connection a private, empty hypervisor (libvirt's test driver
reading a node description), so tests never see each other's domains; ``test:///default`` is
shared by the whole process and is used where a second backend object must see the first's.
"""

from __future__ import annotations

import itertools
from pathlib import Path

try:
    import libvirt  # noqa: F401 - only: is the extra installed?
except ImportError:  # without corral[libvirt] these tests are not collected at all
    collect_ignore_glob = ["test_*.py"]

NODE_XML = """<node>
  <cpu><mhz>2000</mhz><model>test</model><active>8</active><nodes>1</nodes>
    <sockets>1</sockets><cores>8</cores><threads>1</threads></cpu>
  <memory>{memory_kib}</memory>
  <network>
    <name>default</name><bridge name="virbr0"/>
    <ip address="192.168.122.1" netmask="255.255.255.0">
      <dhcp><range start="192.168.122.2" end="192.168.122.254"/></dhcp>
    </ip>
  </network>
</node>
"""

_pools = itertools.count()


def private_hypervisor(folder: Path, name: str = "node", memory_mib: int = 65536) -> str:
    """A ``test:///`` URI of a private, empty hypervisor with ``memory_mib`` of memory."""
    path = folder / f"{name}.xml"
    path.write_text(NODE_XML.format(memory_kib=memory_mib * 1024), encoding="utf-8")
    return f"test://{path}"


def unique_pool() -> str:
    """A pool name no other test uses (for the process-wide ``test:///default``)."""
    return f"lvpool{next(_pools)}"


def options(*uris: str, **domain: object) -> dict[str, object]:
    """Raw libvirt options: the hypervisors at ``uris``, direct kernel boot, one NIC."""
    return {
        "hypervisors": [{"uri": uri} for uri in uris],
        "domain": {
            "domain_type": "qemu",
            "boot": {"kernel": "/boot/vmlinuz", "cmdline": "console=ttyS0"},
            "nics": [{"type": "network", "source": "default"}],
            **domain,
        },
        "storage_dir": "vms",
    }
