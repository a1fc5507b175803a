"""The ``static`` backend: commands, maintenance, the inventory file and the state file.

The contract suite (``test_contract.py``) runs on it too; these tests cover what is its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from corral import exceptions
from corral.backends import load_backend, validate_options
from corral.backends.base import Capability, Handle, PollStatus
from corral.backends.static import OperatesMachines, StaticBackend, find_machine
from corral.backends.static_inventory import MachineState
from corral.config import load_config

from .conftest import spec

CLEANUP = """\
echo "$CORRAL_MACHINE $CORRAL_VM_NAME $CORRAL_VM_ADDRESS $CORRAL_POOL $CORRAL_MACHINE_ATTRS" \
  >> "$1/cleaned"
if [ -e "$1/slow-$CORRAL_MACHINE" ]; then sleep 30; fi
if [ -e "$1/fail-$CORRAL_MACHINE" ]; then echo "cannot wipe $CORRAL_MACHINE" >&2; exit 3; fi
exit 0
"""
LIVECHECK = """\
if [ -e "$1/dead-$CORRAL_MACHINE" ]; then echo "no answer from $CORRAL_VM_ADDRESS" >&2; exit 1; fi
exit 0
"""


def machines(n: int) -> list[dict[str, Any]]:
    return [
        {"name": f"m{i}", "address": f"127.0.0.{i}", "attrs": {"arch": "x86_64", "slot": i}}
        for i in range(1, n + 1)
    ]


def options(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Inline machines (unless ``inventory`` is given), with cleanup and livecheck commands."""
    (tmp_path / "cleanup.sh").write_text(CLEANUP)
    (tmp_path / "livecheck.sh").write_text(LIVECHECK)
    raw: dict[str, Any] = {
        "cleanup": ["sh", str(tmp_path / "cleanup.sh"), str(tmp_path)],
        "livecheck": ["sh", str(tmp_path / "livecheck.sh"), str(tmp_path)],
    }
    if "inventory" not in extra:
        raw["machines"] = machines(2)
    raw.update(extra)
    return raw


def make(tmp_path: Path, **extra: Any) -> StaticBackend:
    backend = load_backend("static", options(tmp_path, **extra), pool="p", base_dir=tmp_path)
    assert isinstance(backend, StaticBackend)
    return backend


@pytest.fixture
async def static(tmp_path: Path) -> AsyncIterator[StaticBackend]:
    backend = make(tmp_path)
    yield backend
    await backend.aclose()


async def by_machine(backend: StaticBackend) -> dict[str, tuple[str, str | None, str | None]]:
    return {s.name: (s.state.value, s.vm, s.reason) for s in await backend.inventory()}


async def test_a_reservation_is_up_at_its_machine_and_commands_get_its_identity(
    static: StaticBackend, tmp_path: Path
) -> None:
    handle = await static.spawn(spec("p-1"))
    assert json.loads(handle.ref) == {"machine": "m1"}
    assert await static.poll(handle) == (await static.poll(Handle("p-1")))  # by name alone
    result = await static.poll(handle)
    assert result.status is PollStatus.UP and result.address == "127.0.0.1"
    await static.release(handle)
    line = (tmp_path / "cleaned").read_text().split(" ", 4)
    assert line[:4] == ["m1", "p-1", "127.0.0.1", "p"]
    assert json.loads(line[4]) == {"arch": "x86_64", "slot": 1}
    assert isinstance(static, OperatesMachines)
    assert static.capabilities >= {Capability.LIST, Capability.RELEASE, Capability.LIVECHECK}


async def test_a_spawn_with_no_free_machine_waits_for_the_next_one(
    static: StaticBackend, tmp_path: Path
) -> None:
    first = await static.spawn(spec("p-1"))
    await static.spawn(spec("p-2"))
    third = await static.spawn(spec("p-3"))
    assert (await static.poll(third)).status is PollStatus.PENDING
    assert {h.name for h in await static.list()} == {"p-1", "p-2", "p-3"}
    await static.terminate(first)  # cleaned, then handed on at once
    result = await static.poll(third)
    assert result.status is PollStatus.UP and result.address == "127.0.0.1"
    assert (tmp_path / "cleaned").read_text().startswith("m1 p-1 ")


async def test_a_failed_cleanup_on_release_takes_the_machine_out_of_service(
    static: StaticBackend, tmp_path: Path
) -> None:
    handle = await static.spawn(spec("p-1"))
    (tmp_path / "fail-m1").touch()
    with pytest.raises(exceptions.BackendError, match=r"cleanup exited with 3.*cannot wipe m1"):
        await static.release(handle)
    state, vm, reason = (await by_machine(static))["m1"]
    assert (state, vm) == ("reserved", "p-1") and reason is not None and "cannot wipe" in reason
    await static.terminate(handle)  # the controller's rollback: no second cleanup
    assert (tmp_path / "cleaned").read_text().count("m1 p-1") == 1
    assert (await by_machine(static))["m1"][0] == "maintenance"
    # never reserved again: the next two reservations get m2 and then wait
    assert (await static.poll(await static.spawn(spec("p-2")))).address == "127.0.0.2"
    assert (await static.poll(await static.spawn(spec("p-3")))).status is PollStatus.PENDING
    returned = await static.return_machine("m1")
    assert returned.state is MachineState.RESERVED and returned.vm == "p-3"


async def test_a_failed_cleanup_on_terminate_takes_the_machine_out_of_service(
    static: StaticBackend, tmp_path: Path
) -> None:
    handle = await static.spawn(spec("p-1"))
    (tmp_path / "fail-m1").touch()
    await static.terminate(handle)  # confirmed: the reservation ended, the machine is held
    await static.terminate(handle)  # idempotent, no second cleanup
    assert (tmp_path / "cleaned").read_text().count("m1 p-1") == 1
    assert await static.list() == []
    state, _, reason = (await by_machine(static))["m1"]
    assert state == "maintenance"
    assert reason is not None and reason.startswith("cleanup failed: cleanup exited with 3")


async def test_a_cleanup_that_hangs_is_killed_and_the_machine_held(tmp_path: Path) -> None:
    backend = make(tmp_path, timeouts={"cleanup": 0.5})
    try:
        handle = await backend.spawn(spec("p-1"))
        (tmp_path / "slow-m1").touch()
        await backend.terminate(handle)
        state, _, reason = (await by_machine(backend))["m1"]
        assert state == "maintenance" and reason is not None and "killed after 0.5 s" in reason
    finally:
        await backend.aclose()


async def test_a_failed_livecheck_sends_the_machine_to_maintenance_when_released(
    static: StaticBackend, tmp_path: Path
) -> None:
    one = await static.spawn(spec("p-1"))
    two = await static.spawn(spec("p-2"))
    assert await static.livecheck(one) is True
    (tmp_path / "dead-m1").touch()
    assert await static.livecheck(one) is False
    assert await static.livecheck(two) is True
    await static.terminate(one)
    await static.terminate(two)
    inventory = await by_machine(static)
    assert inventory["m2"][0] == "free"
    assert inventory["m1"][0] == "maintenance"
    assert "livecheck failed" in str(inventory["m1"][2]) and "no answer" in str(inventory["m1"][2])
    assert "m1 p-1" not in (tmp_path / "cleaned").read_text()  # not cleaned: not coming back


async def test_a_livecheck_that_passes_again_clears_the_failure(
    static: StaticBackend, tmp_path: Path
) -> None:
    handle = await static.spawn(spec("p-1"))
    (tmp_path / "dead-m1").touch()
    assert await static.livecheck(handle) is False
    (tmp_path / "dead-m1").unlink()
    assert await static.livecheck(handle) is True
    await static.terminate(handle)
    assert (await by_machine(static))["m1"][0] == "free"


async def test_operator_maintenance_and_return(static: StaticBackend) -> None:
    status = await static.maintenance("m2", "fan noise")
    assert (status.state, status.reason) == (MachineState.MAINTENANCE, "fan noise")
    assert (await static.poll(await static.spawn(spec("p-1")))).address == "127.0.0.1"
    pending = await static.spawn(spec("p-2"))
    assert (await static.poll(pending)).status is PollStatus.PENDING
    with pytest.raises(exceptions.MachineNotFound, match="'m9'"):
        await static.maintenance("m9", "x")
    with pytest.raises(exceptions.Conflict):
        await static.return_machine("m1")
    await static.return_machine("m2")
    assert (await static.poll(pending)).address == "127.0.0.2"


async def test_state_survives_a_new_backend_object(tmp_path: Path) -> None:
    first = make(tmp_path)
    await first.spawn(spec("p-1"))
    await first.maintenance("m2", "broken")
    await first.aclose()
    second = make(tmp_path)
    try:
        assert await by_machine(second) == {
            "m1": ("reserved", "p-1", None),
            "m2": ("maintenance", None, "broken"),
        }
        assert (tmp_path / ".corral" / "static-p.json").exists()
    finally:
        await second.aclose()


async def test_two_processes_sharing_the_state_file_never_reserve_one_machine_twice(
    tmp_path: Path,
) -> None:
    many = machines(6)
    a, b = make(tmp_path, machines=many), make(tmp_path, machines=many)
    try:
        handles = await asyncio.gather(
            *(
                (a if i % 2 else b).spawn(spec(f"p-{i}"))
                for i in range(10)  # 10 reservations, 6 machines
            )
        )
        results = [await a.poll(h) for h in handles]
        addresses = [r.address for r in results if r.status is PollStatus.UP]
        assert len(addresses) == 6 and len(set(addresses)) == 6
    finally:
        await a.aclose()
        await b.aclose()


async def test_the_inventory_file_is_re_read_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "machines.yaml"
    path.write_text(
        "- {name: m1, address: 127.0.0.1}\n- {name: m2, address: 127.0.0.2}\n", encoding="utf-8"
    )
    backend = make(tmp_path, inventory="machines.yaml")
    try:
        one = await backend.spawn(spec("p-1"))
        await backend.spawn(spec("p-2"))
        waiting = await backend.spawn(spec("p-3"))
        assert (await backend.poll(waiting)).status is PollStatus.PENDING
        # add m3, remove m1 (reserved), keep m2
        path.write_text(
            "machines:\n  - {name: m2, address: 127.0.0.2}\n  - {name: m3, address: 127.0.0.3}\n",
            encoding="utf-8",
        )
        assert (await backend.poll(waiting)).address == "127.0.0.3"
        assert (await backend.poll(one)).address == "127.0.0.1"  # not disturbed
        assert (await by_machine(backend))["m1"][0] == "retiring"
        await backend.terminate(one)
        assert set(await by_machine(backend)) == {"m2", "m3"}
        assert not (tmp_path / "cleaned").exists()  # a retiring machine is not cleaned
        # a broken edit is logged and the last good inventory kept
        path.write_text("- {name: m2, address: 'not valid!'}\n", encoding="utf-8")
        assert set(await by_machine(backend)) == {"m2", "m3"}
    finally:
        await backend.aclose()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ({}, "exactly one of 'machines'"),
        ({"machines": [{"name": "a", "address": "10.0.0.1"}], "inventory": "x.yaml"}, "one of"),
        ({"machines": []}, "machines"),
        (
            {"machines": [{"name": "a", "address": "10.0.0.1"}, {"name": "a", "address": "h"}]},
            "unique: a",
        ),
        ({"machines": [{"name": "a", "address": "10.0.0.1"}], "cleanup": ""}, "cleanup"),
        ({"machines": [{"name": "a"}]}, "address"),
        ({"machines": [{"name": "a", "address": "1.2.3.4"}], "spare": 1}, "spare: unknown"),
    ],
)
def test_bad_options_are_refused_naming_the_key(raw: dict[str, Any], problem: str) -> None:
    with pytest.raises(exceptions.ConfigError, match="backend 'static'") as info:
        validate_options("static", raw)
    assert problem in str(info.value)


def test_a_missing_inventory_file_or_program_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ConfigError, match=r"cannot read inventory .*nope\.yaml"):
        make(tmp_path, inventory="nope.yaml")
    with pytest.raises(exceptions.ConfigError, match="cleanup: program 'no-such-program-x'"):
        make(tmp_path, cleanup=["no-such-program-x"])


def test_the_documented_example_config_is_valid(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[2] / "docs" / "examples"
    for name in ("static.yaml", "ppc64le-machines.yaml", "wipe-builder.sh", "check-builder.sh"):
        target = tmp_path / name
        target.write_bytes((examples / name).read_bytes())
        target.chmod((examples / name).stat().st_mode)
    (tmp_path / ".corral").mkdir()
    cfg = load_config(tmp_path / "static.yaml", env={})  # probes: builds the backends
    assert cfg.pools["s390x"].max == 2  # follows the inline inventory
    assert cfg.pools["ppc64le"].max == 8


async def test_find_machine_searches_every_static_pool(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make(tmp_path / "a")
    other = make(tmp_path / "b", machines=[{"name": "gpu-1", "address": "10.0.0.9"}])
    fake = load_backend("fake", {}, pool="f")
    try:
        await other.maintenance("gpu-1", "driver update")
        pool, backend, status = await find_machine({"a": first, "b": other, "f": fake}, "gpu-1")
        assert (pool, backend, status.state) == ("b", other, MachineState.MAINTENANCE)
        with pytest.raises(exceptions.MachineNotFound, match=r"'gpu-9'.*pools: a, b\)"):
            await find_machine({"a": first, "b": other, "f": fake}, "gpu-9")
        with pytest.raises(exceptions.MachineNotFound, match="no pool has pre-existing"):
            await find_machine({"f": fake}, "gpu-1")
    finally:
        await first.aclose()
        await other.aclose()
        await fake.aclose()


async def test_a_machine_that_died_while_free_is_checked_out_before_it_serves(
    static: StaticBackend, tmp_path: Path
) -> None:
    (tmp_path / "dead-m1").touch()
    handle = await static.spawn(spec("p-1"))  # reserves m1, the first in the inventory
    first = await static.poll(handle)
    assert first.status is PollStatus.PENDING and first.retry_after == 0.0
    state, _, reason = (await by_machine(static))["m1"]
    assert state == "maintenance"
    assert reason is not None and reason.startswith("livecheck failed before serving")
    again = await static.poll(handle)
    assert again.status is PollStatus.UP and again.address == "127.0.0.2"
    (tmp_path / "dead-m2").touch()
    assert (await static.poll(handle)).status is PollStatus.UP  # checked once, not every poll


async def test_an_inventory_edited_while_corral_was_down_is_applied_at_the_first_call(
    tmp_path: Path,
) -> None:
    path = tmp_path / "machines.yaml"
    path.write_text("- {name: m1, address: 127.0.0.1}\n- {name: m2, address: 127.0.0.2}\n")
    first = make(tmp_path, inventory="machines.yaml")
    await first.maintenance("m2", "broken")
    await first.aclose()
    path.write_text("- {name: m1, address: 127.0.0.1}\n")  # m2 removed while down
    second = make(tmp_path, inventory="machines.yaml")
    try:
        assert await by_machine(second) == {"m1": ("free", None, None)}
        state = json.loads((tmp_path / ".corral" / "static-p.json").read_text())
        assert state["maintenance"] == {}
    finally:
        await second.aclose()
