"""The static backend's pure core: reservations, the line of waiting ones, maintenance, retiring."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.backends import static_inventory as inv


def machines(*names: str) -> tuple[inv.MachineEntry, ...]:
    return tuple(
        inv.MachineEntry(name=n, address=f"127.0.0.{i}") for i, n in enumerate(names, start=1)
    )


def states(state: inv.State, inventory: tuple[inv.MachineEntry, ...]) -> dict[str, str]:
    return {s.name: s.state.value for s in inv.statuses(state, inventory)}


def test_reservations_take_free_machines_in_inventory_order_then_wait_in_line() -> None:
    m = machines("a", "b")
    state = inv.State()
    assert inv.reserve(state, m, "vm-1", 1.0).machine == "a"
    assert inv.reserve(state, m, "vm-2", 2.0).machine == "b"
    third = inv.reserve(state, m, "vm-3", 3.0)
    fourth = inv.reserve(state, m, "vm-4", 4.0)
    assert third.machine is None and fourth.machine is None
    inv.end(state, m, "vm-2", 5.0)
    # the oldest waiting reservation gets the machine, at once
    assert state.reservations["vm-3"].machine == "b"
    assert state.reservations["vm-3"].address == "127.0.0.2"
    assert state.reservations["vm-4"].machine is None


def test_reserving_again_for_the_same_vm_returns_its_reservation() -> None:
    m = machines("a", "b")
    state = inv.State()
    first = inv.reserve(state, m, "vm-1", 1.0)
    assert inv.reserve(state, m, "vm-1", 2.0) is first
    assert len(state.reservations) == 1


def test_ending_is_idempotent_and_frees_the_machine() -> None:
    m = machines("a")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)
    assert inv.end(state, m, "vm-1", 2.0) is not None
    assert inv.end(state, m, "vm-1", 3.0) is None
    assert states(state, m) == {"a": "free"}


def test_a_failed_cleanup_puts_the_machine_in_maintenance_with_the_reason() -> None:
    m = machines("a")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)
    inv.reserve(state, m, "vm-2", 1.5)  # waits for a machine
    inv.end(state, m, "vm-1", 2.0, cleanup_failure="exited with 3; stderr: disk full")
    assert state.maintenance["a"].reason == "cleanup failed: exited with 3; stderr: disk full"
    assert state.reservations["vm-2"].machine is None  # never handed a machine in maintenance
    (status,) = inv.statuses(state, m)
    assert status.state is inv.MachineState.MAINTENANCE and status.since == 2.0


def test_a_failed_latest_livecheck_sends_the_machine_to_maintenance_at_the_end() -> None:
    m = machines("a", "b")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)
    inv.reserve(state, m, "vm-2", 1.0)
    state.reservations["vm-1"].livecheck_failure = "exited with 1"
    assert inv.needs_cleanup(state, m, "vm-1") is None  # not coming back: nothing to clean
    assert inv.needs_cleanup(state, m, "vm-2") is not None
    inv.end(state, m, "vm-1", 2.0)
    inv.end(state, m, "vm-2", 2.0)
    assert states(state, m) == {"a": "maintenance", "b": "free"}
    assert state.maintenance["a"].reason == "livecheck failed: exited with 1"


def test_operator_maintenance_of_a_reserved_machine_applies_when_it_is_released() -> None:
    m = machines("a")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)
    inv.maintenance(state, m, "a", "disk replacement", 2.0)
    (status,) = inv.statuses(state, m)
    assert status.state is inv.MachineState.RESERVED and status.reason == "disk replacement"
    assert inv.needs_cleanup(state, m, "vm-1") is None
    inv.end(state, m, "vm-1", 3.0)
    assert states(state, m) == {"a": "maintenance"}
    assert state.maintenance["a"].reason == "disk replacement"  # not replaced by the end


def test_returning_a_machine_hands_it_to_a_waiting_reservation() -> None:
    m = machines("a")
    state = inv.State()
    inv.maintenance(state, m, "a", "broken", 1.0)
    inv.reserve(state, m, "vm-1", 2.0)
    assert state.reservations["vm-1"].machine is None
    inv.return_machine(state, m, "a")
    assert state.reservations["vm-1"].machine == "a"


def test_operator_errors_name_the_problem_and_change_nothing() -> None:
    m = machines("a")
    state = inv.State()
    before = state.to_json()
    with pytest.raises(exceptions.MachineNotFound, match=r"'zz'.*machines: a"):
        inv.maintenance(state, m, "zz", "why", 1.0)
    with pytest.raises(exceptions.InvalidInput, match="reason"):
        inv.maintenance(state, m, "a", "  ", 1.0)
    with pytest.raises(exceptions.Conflict, match="not in maintenance"):
        inv.return_machine(state, m, "a")
    with pytest.raises(exceptions.MachineNotFound):
        inv.return_machine(state, m, "zz")
    assert state.to_json() == before


def test_a_machine_removed_while_reserved_retires_when_its_reservation_ends() -> None:
    old = machines("a", "b")
    state = inv.State()
    inv.reserve(state, old, "vm-1", 1.0)  # holds a
    new = machines("b")
    inv.prune(state, new)
    assert state.reservations["vm-1"].machine == "a"  # the ticket is not disturbed
    assert {s.name: s.state for s in inv.statuses(state, new)} == {
        "b": inv.MachineState.FREE,
        "a": inv.MachineState.RETIRING,
    }
    assert inv.needs_cleanup(state, new, "vm-1") is None  # leaving: not ours to clean
    inv.end(state, new, "vm-1", 2.0, cleanup_failure=None)
    assert [s.name for s in inv.statuses(state, new)] == ["b"]
    assert "a" not in state.maintenance


def test_added_machines_serve_waiting_reservations_and_maintenance_of_removed_is_forgotten() -> (
    None
):
    m = machines("a")
    state = inv.State()
    inv.maintenance(state, m, "a", "broken", 1.0)
    inv.reserve(state, m, "vm-1", 2.0)
    grown = (*m, inv.MachineEntry(name="c", address="10.0.0.3"))
    inv.prune(state, grown)
    assert state.reservations["vm-1"].machine == "c"
    shrunk = (grown[1],)
    inv.prune(state, shrunk)
    assert "a" not in state.maintenance


def test_state_round_trips_and_a_corrupt_file_is_named() -> None:
    m = machines("a", "b")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)
    inv.reserve(state, m, "vm-2", 2.0)
    inv.reserve(state, m, "vm-3", 3.0)
    inv.end(state, m, "vm-1", 4.0, cleanup_failure="boom")
    again = inv.State.from_json(state.to_json(), "s.json")
    assert again == state
    assert list(again.reservations) == ["vm-2", "vm-3"]  # the line keeps its order
    with pytest.raises(exceptions.BackendError, match=r"s\.json is corrupt"):
        inv.State.from_json('{"version": 1}', "s.json")
    with pytest.raises(exceptions.BackendError, match="unsupported version"):
        inv.State.from_json('{"version": 9, "reservations": [], "maintenance": {}}', "s.json")


def test_a_long_reason_keeps_its_end() -> None:
    reason = inv.clip("x" * 5000 + " the cause")
    assert len(reason) == inv.MAX_REASON and reason.endswith("the cause")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("machines: [{name: a, address: 'not an address!'}]", "machines.0.address"),
        ("- {name: a, address: 10.0.0.1}\n- {name: a, address: 10.0.0.2}", "unique: a"),
        ("- {name: 'a b', address: 10.0.0.1}", "machines.0.name"),
        ("- {name: a, address: 10.0.0.1, color: red}", "machines.0.color"),
        ("- {name: a, address: 10.0.0.1, attrs: {arch: [x]}}", "machines.0.attrs.arch"),
        ("hosts: []", "unknown keys ['hosts']"),
        ("just text", "must be a list"),
        ("[unclosed", "not valid YAML"),
    ],
)
def test_a_bad_inventory_file_is_refused_naming_the_place(text: str, problem: str) -> None:
    with pytest.raises(exceptions.ConfigError, match=r"inventory inv\.yaml") as info:
        inv.parse_inventory(text, "inv.yaml")
    assert problem in str(info.value)


def test_an_inventory_file_as_a_list_or_a_mapping() -> None:
    listed = inv.parse_inventory(
        "- {name: s390x-1, address: 10.0.0.5, attrs: {arch: s390x, cores: 4}}", "f"
    )
    mapped = inv.parse_inventory(
        "machines:\n  - {name: s390x-1, address: 10.0.0.5, attrs: {arch: s390x, cores: 4}}", "f"
    )
    assert listed == mapped
    assert listed[0].attrs == {"arch": "s390x", "cores": 4}
    assert inv.parse_inventory("", "f") == ()


def test_a_failed_first_check_sends_the_reservation_back_in_line_keeping_its_age() -> None:
    m = machines("a", "b")
    state = inv.State()
    inv.reserve(state, m, "vm-1", 1.0)  # a
    inv.reserve(state, m, "vm-2", 2.0)  # b
    inv.reserve(state, m, "vm-3", 3.0)  # waits
    inv.first_check(state, m, "vm-1", "a", "exited with 1", 4.0)
    assert state.maintenance["a"].reason == "livecheck failed before serving: exited with 1"
    assert state.reservations["vm-1"].machine is None
    inv.end(state, m, "vm-2", 5.0)
    assert state.reservations["vm-1"].machine == "b"  # older than vm-3: served first
    assert state.reservations["vm-3"].machine is None
    inv.first_check(state, m, "vm-1", "a", None, 6.0)  # a stale answer about a changes nothing
    assert not state.reservations["vm-1"].checked
    inv.first_check(state, m, "vm-1", "b", None, 6.0)
    assert state.reservations["vm-1"].checked
