"""Real QEMU guests (software emulation, TCG) through the libvirt backend, on the daemon-less
``qemu:///embed`` driver: the tiny guest of :mod:`.guest` boots, reports its address on the
serial console, and is terminated without leaving a domain or a file.

Breakages these catch: domain XML a real QEMU refuses, a console log path the guest cannot write,
readiness parsed from the wrong place, files left behind by terminate.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from corral.backends import load_backend
from corral.backends.base import PollStatus, VMSpec
from corral.backends.guard import GuardedBackend
from corral.backends.libvirt import LibvirtBackend
from corral.backends.libvirt.states import VmState

from . import guest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(guest.available() is not None, reason=str(guest.available())),
]

EMBED_QEMU_CONF = (
    'stdio_handler = "file"\nuser = "root"\ngroup = "root"\n'
    "dynamic_ownership = 0\nremember_owner = 0\n"
)
"""The embedded driver runs QEMU in this process's name: no virtlogd, no libvirt-qemu user."""


@pytest.fixture(scope="module")
def embed_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, guest.Guest]]:
    """One embedded QEMU driver root for the module (libvirt allows one per process)."""
    folder = tmp_path_factory.mktemp("embed")
    (folder / "root" / "etc").mkdir(parents=True)
    (folder / "root" / "etc" / "qemu.conf").write_text(EMBED_QEMU_CONF, encoding="utf-8")
    yield folder, guest.build(folder)


def real_options(root: Path, tiny: guest.Guest) -> dict[str, object]:
    return {
        "hypervisors": [{"uri": f"qemu:///embed?root={root / 'root'}", "max_creations": 2}],
        "domain": {
            "domain_type": "qemu",
            "boot": {
                "kernel": str(tiny.kernel),
                "initrd": str(tiny.initrd),
                "cmdline": guest.CMDLINE,
            },
            "nics": [{"type": "user"}],
            "disks": [{"size_gib": 1}],
        },
        "readiness": {"method": "console"},
        "storage_dir": str(root / "vms"),
    }


@pytest.fixture
async def real(embed_root: tuple[Path, guest.Guest]) -> AsyncIterator[LibvirtBackend]:
    root, tiny = embed_root
    backend = load_backend("libvirt", real_options(root, tiny), pool="real")
    assert isinstance(backend, LibvirtBackend)
    yield backend
    await backend.aclose()


async def test_real_guests_boot_report_their_address_and_are_cleaned_up(
    real: LibvirtBackend, embed_root: tuple[Path, guest.Guest]
) -> None:
    guarded = GuardedBackend(real, call_timeout=120.0, poll_interval=0.2)
    template = {"memory_mib": 192, "vcpus": 1}
    started = time.monotonic()
    handles = await asyncio.gather(
        *(guarded.spawn(VMSpec(f"real-{i}", "real", i, template)) for i in range(2))
    )
    results = await asyncio.gather(*(guarded.wait_up(h, timeout=240.0) for h in handles))
    boot = time.monotonic() - started
    assert [r.status for r in results] == [PollStatus.UP, PollStatus.UP], results
    assert {r.address for r in results} == {"10.0.2.15"}  # QEMU's user network's DHCP answer
    assert [real.vm_state(h.name) for h in handles] == [VmState.UP, VmState.UP]
    assert all([await guarded.livecheck(h) for h in handles])
    assert {h.name for h in await guarded.list()} == {"real-0", "real-1"}
    await asyncio.gather(*(guarded.terminate(h) for h in handles))
    assert await guarded.list() == []
    root, _ = embed_root
    assert list((root / "vms" / "real").iterdir()) == []
    print(f"two TCG guests up in {boot:.1f} s")


async def test_a_guest_that_dies_is_seen_down_by_its_event(real: LibvirtBackend) -> None:
    guarded = GuardedBackend(real, call_timeout=120.0, poll_interval=0.2)
    handle = await guarded.spawn(VMSpec("real-9", "real", 9, {"memory_mib": 192, "vcpus": 1}))
    try:
        assert (await guarded.wait_up(handle, timeout=240.0)).status is PollStatus.UP
        dom = real._conns["h0"].lookupByName("real-9")
        await asyncio.to_thread(dom.destroy)
        deadline = time.monotonic() + 30
        while real.vm_state("real-9") is not VmState.DOWN:
            assert time.monotonic() < deadline, real.vm_state("real-9")
            await asyncio.sleep(0.05)
        assert await guarded.livecheck(handle) is False
        assert (await guarded.poll(handle)).status is PollStatus.FAILED
    finally:
        await guarded.terminate(handle)
