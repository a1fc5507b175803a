"""Device normalisation (pure): vdsm's behaviour on examples, and properties with hypothesis.

Breakages these catch: auto indices restarting at 0 past an explicit one (duplicate targets);
explicit indices renumbered; duplicates or unknown buses let through; vdsm's repeated last MAC.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import exceptions
from corral.backends.libvirt import spec


@pytest.mark.parametrize(
    ("bus", "index", "target"),
    [
        ("virtio", 0, "vda"),
        ("virtio", 25, "vdz"),
        ("virtio", 26, "vdaa"),
        ("virtio", 27, "vdab"),
        ("scsi", 1, "sdb"),
        ("sata", 2, "sdc"),
        ("ide", 3, "hdd"),
        ("virtio", 701, "vdzz"),
    ],
)
def test_target_names_follow_libvirt(bus: str, index: int, target: str) -> None:
    assert spec.target_name(bus, index) == target


def test_explicit_indices_are_kept_and_others_fill_the_lowest_free() -> None:
    # vdsm: the cdrom at ide index 2 keeps it; the two unindexed IDE drives get 0 and 1
    assert spec.assign_indices([("ide", None), ("ide", 2), ("ide", None)]) == [0, 2, 1]
    assert spec.assign_indices([("virtio", 1), ("virtio", None), ("virtio", None)]) == [1, 0, 2]


def test_indices_are_per_bus() -> None:
    assert spec.assign_indices([("virtio", None), ("ide", None), ("virtio", None)]) == [0, 0, 1]


def test_buses_sharing_a_prefix_never_share_a_target() -> None:
    # scsi and sata both name their disks sdX: sata's first free index skips scsi's sda
    assert spec.assign_indices([("scsi", None), ("sata", None)]) == [0, 1]
    with pytest.raises(exceptions.ConfigError, match=r"disks\[1\].*taken by disks\[0\].*sda"):
        spec.assign_indices([("scsi", 0), ("sata", 0)])


def test_duplicate_index_is_refused_naming_both_disks() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"disks\[2\]: index 1 .* disks\[0\]"):
        spec.assign_indices([("virtio", 1), ("virtio", None), ("virtio", 1)])


def test_unknown_bus_and_index_out_of_range_are_refused() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"disks\[1\]: unknown bus 'floppy'"):
        spec.assign_indices([("virtio", None), ("floppy", None)])
    with pytest.raises(exceptions.ConfigError, match=r"index 4 out of range for bus 'ide'"):
        spec.assign_indices([("ide", 4)])
    with pytest.raises(exceptions.ConfigError, match="no free index left on bus 'ide'"):
        spec.assign_indices([("ide", None)] * 5)


def test_drives_need_a_source_for_overlay_and_file() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"disks\[0\]: a overlay disk needs a source"):
        spec.normalise_drives([spec.DiskRequest(kind="overlay")])
    drives = spec.normalise_drives(
        [
            spec.DiskRequest(kind="overlay", source="/b.qcow2", format="raw"),
            spec.DiskRequest(kind="seed"),
        ]
    )
    assert [(d.target, d.format, d.readonly) for d in drives] == [
        ("vda", "qcow2", False),  # an overlay is always qcow2, whatever its base
        ("vdb", "raw", True),  # the seed is read-only raw
    ]


def test_default_controller_balloon_and_nic_alias() -> None:
    devices = spec.normalise_devices([], [spec.NicRequest(model="pv")])
    assert devices.controllers == ("virtio-serial",)
    assert devices.balloon == "none"
    assert devices.nics[0].model == "virtio"
    assert spec.normalise_devices([], [], balloon="virtio").balloon == "virtio"
    with pytest.raises(exceptions.ConfigError, match="balloon: unknown model 'xen'"):
        spec.normalise_devices([], [], balloon="xen")


def test_vdsm_nic_lists() -> None:
    nics = spec.nics_from_lists(["pv", "e1000"], ["52:54:00:00:00:01"], ["br0"])
    assert [(n.model, n.mac, n.source) for n in nics] == [
        ("pv", "52:54:00:00:00:01", "br0"),
        ("e1000", None, "br0"),  # the last network repeats; the MAC does NOT (vdsm's bug)
    ]
    with pytest.raises(exceptions.ConfigError, match="2 MAC addresses for 1 NIC models"):
        spec.nics_from_lists(["pv"], ["52:54:00:00:00:01", "52:54:00:00:00:02"], [])


@pytest.mark.parametrize(
    ("nic", "message"),
    [
        (spec.NicRequest(model="tulip"), "unknown NIC model 'tulip'"),
        (spec.NicRequest(type="vhost"), "unknown type 'vhost'"),
        (spec.NicRequest(mac="52:54:00:00:00"), "is not a MAC address"),
        (spec.NicRequest(mac="01:00:5e:00:00:01"), "multicast"),
        (spec.NicRequest(type="bridge", source=""), "a bridge NIC needs a source"),
    ],
)
def test_bad_nics_are_refused(nic: spec.NicRequest, message: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=rf"nics\[0\]: .*{message}"):
        spec.normalise_nics([nic])


def test_duplicate_mac_is_refused() -> None:
    mac = "52:54:00:aa:bb:cc"
    with pytest.raises(exceptions.ConfigError, match=r"nics\[1\]: MAC 52:54:00:aa:bb:cc"):
        spec.normalise_nics([spec.NicRequest(mac=mac), spec.NicRequest(mac=mac.upper())])


def test_generated_macs_are_stable_unicast_and_per_vm() -> None:
    nics = spec.normalise_nics([spec.NicRequest(), spec.NicRequest(mac="52:54:00:00:00:09")])
    first = spec.bind_macs(nics, "pool", "vm-1")
    assert first == spec.bind_macs(nics, "pool", "vm-1")
    assert first[1].mac == "52:54:00:00:00:09"
    assert first[0].mac is not None and first[0].mac.startswith("52:54:00:")
    assert spec.bind_macs(nics, "pool", "vm-2")[0].mac != first[0].mac
    assert spec.stable_uuid("pool", "vm-1") != spec.stable_uuid("pool", "vm-2")


BUSES = sorted(spec.TARGET_PREFIX)
disk_lists = st.lists(
    st.tuples(st.sampled_from(BUSES), st.one_of(st.none(), st.integers(0, 6))), max_size=12
)


@given(disk_lists)
def test_property_targets_unique_explicit_kept_auto_dense(
    disks: list[tuple[str, int | None]],
) -> None:
    try:
        indices = spec.assign_indices(disks)
    except exceptions.ConfigError:
        # refused only for a real conflict: a repeated target among the explicit ones, or IDE full
        explicit = [
            spec.target_name(b, i) for b, i in disks if i is not None and i <= spec.MAX_INDEX[b]
        ]
        ide = sum(1 for b, _ in disks if b == "ide")
        out_of_range = any(i is not None and i > spec.MAX_INDEX[b] for b, i in disks)
        assert len(set(explicit)) < len(explicit) or ide > 4 or out_of_range
        return
    targets = [spec.target_name(bus, index) for (bus, _), index in zip(disks, indices, strict=True)]
    assert len(set(targets)) == len(targets)  # unique
    for (_, given_index), index in zip(disks, indices, strict=True):
        if given_index is not None:
            assert index == given_index  # explicit kept
    if all(i is None for _, i in disks):  # dense: each prefix uses exactly its first n names
        for prefix in set(spec.TARGET_PREFIX.values()):
            mine = sorted(t for t in targets if t.startswith(prefix))
            assert mine == sorted(f"{prefix}{chr(ord('a') + k)}" for k in range(len(mine)))
