"""Placement over hypervisors, memory commit and bounded creations (pure books, asyncio slots).

Breakages these catch: placing on the fullest hypervisor; admitting past capacity or forgetting
the per-VM overhead; a release that frees nothing; more creations in flight than the bound.
"""

from __future__ import annotations

import asyncio

import pytest

from corral import exceptions
from corral.backends.base import CapacityOptions
from corral.backends.capacity import Demand
from corral.backends.libvirt.hypervisors import Load, Placement, place


def cap(memory: int, vcpus: int = 64, overhead: int = 0) -> CapacityOptions:
    return CapacityOptions(memory_mib=memory, vcpus=vcpus, overhead_mib=overhead)


def test_place_on_the_most_free_memory_then_configuration_order() -> None:
    loads = [Load("a", cap(4096), Demand(2048, 1)), Load("b", cap(4096), Demand(1024, 1))]
    assert place(loads, 512, 1) == "b"
    even = [Load("a", cap(4096), Demand(0, 0)), Load("b", cap(4096), Demand(0, 0))]
    assert place(even, 512, 1) == "a"


def test_nowhere_to_place_names_every_hypervisor() -> None:
    loads = [
        Load("a", cap(1024, overhead=256), Demand(512, 1)),
        Load("b", cap(4096, 1), Demand(0, 1)),
    ]
    with pytest.raises(exceptions.CapacityExceeded, match=r"a: memory: 512 MiB .*; b: vcpus"):
        place(loads, 512, 1)


def test_admit_commits_overhead_and_release_frees() -> None:
    books = Placement({"a": cap(2048, overhead=256), "b": cap(1536)}, {"a": 2, "b": 2})
    assert books.admit("vm-1", 768, 1) == "a"
    assert books.committed("a") == Demand(1024, 1)
    assert books.admit("vm-1", 768, 1) == "a"  # a retried spawn commits nothing more
    assert books.admit("vm-2", 768, 1) == "b"  # a has 1024 MiB free, b 1536
    assert books.committed("b") == Demand(768, 1)
    with pytest.raises(exceptions.CapacityExceeded):
        books.admit("vm-3", 1024, 1)  # a: 1024 + 1280 > 2048; b: 768 + 1024 > 1536
    assert books.where("vm-3") is None
    books.release("vm-1")
    books.release("vm-1")
    assert books.committed("a") == Demand(0, 0)
    assert books.admit("vm-3", 1024, 1) == "a"


async def test_creations_in_flight_are_bounded_per_hypervisor() -> None:
    books = Placement({"a": cap(10**6), "b": cap(10**6)}, {"a": 2, "b": 1})
    gate = asyncio.Event()
    peak = {"a": 0, "b": 0}

    async def create(hid: str) -> None:
        async with books.creating_on(hid):
            peak[hid] = max(peak[hid], books.creating(hid))
            await gate.wait()

    tasks = [asyncio.create_task(create(h)) for h in ["a"] * 5 + ["b"] * 3]
    for _ in range(20):
        await asyncio.sleep(0)
    assert (books.creating("a"), books.creating("b")) == (2, 1)
    gate.set()
    await asyncio.gather(*tasks)
    assert peak == {"a": 2, "b": 1}
    assert (books.creating("a"), books.creating("b")) == (0, 0)
