"""The restart rules table: every cell as written down independently, the names, the docs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from corral.pools import restart
from corral.pools.lifecycle import ALIVE_VM_STATES, VMState
from corral.pools.restart import Action, Inventory, Situation, Unrecorded

# Written from SPEC §6/§10 and issue 8 items 5-7, independently of the code. One line per
# record and inventory: the action with no task, with no task under --adopt, with a task.
EXPECTED_TABLE = """
spawning    listed:   terminate terminate leave
spawning    unlisted: terminate terminate leave
spawning    unknown:  terminate terminate leave
ready       listed:   keep      keep      leave
ready       unlisted: lost      lost      leave
ready       unknown:  keep      keep      leave
in_use      listed:   keep      keep      leave
in_use      unlisted: lost      lost      leave
in_use      unknown:  keep      keep      leave
releasing   listed:   terminate terminate leave
releasing   unlisted: lost      lost      leave
releasing   unknown:  terminate terminate leave
held        listed:   keep      keep      leave
held        unlisted: lost      lost      leave
held        unknown:  keep      keep      leave
terminating listed:   terminate terminate leave
terminating unlisted: gone      gone      leave
terminating unknown:  terminate terminate leave
terminated  listed:   sweep     sweep     leave
terminated  unlisted: keep      keep      leave
terminated  unknown:  keep      keep      leave
failed      listed:   sweep     sweep     leave
failed      unlisted: keep      keep      leave
failed      unknown:  keep      keep      leave
forgotten   listed:   keep      keep      leave
forgotten   unlisted: keep      keep      leave
forgotten   unknown:  keep      keep      leave
purged      listed:   sweep     sweep     leave
purged      unlisted: keep      keep      leave
purged      unknown:  keep      keep      leave
foreign     listed:   report    sweep     leave
foreign     unlisted: keep      keep      leave
foreign     unknown:  keep      keep      leave
"""


def _expected() -> dict[Situation, Action]:
    table: dict[Situation, Action] = {}
    records: dict[str, restart.Record] = {r.value: r for r in restart.RECORDS}
    for line in EXPECTED_TABLE.strip().splitlines():
        head, actions = line.split(":")
        record, inventory = head.split()
        plain, adopted, driven = (Action(a) for a in actions.split())
        for task, adopt, action in (
            (False, False, plain),
            (False, True, adopted),
            (True, False, driven),
            (True, True, driven),
        ):
            table[Situation(records[record], Inventory(inventory), task, adopt)] = action
    return table


EXPECTED = _expected()
CELLS = list(restart.situations())


def test_the_table_has_every_cell_once() -> None:
    assert len(CELLS) == len(set(CELLS)) == (len(VMState) + len(Unrecorded)) * 3 * 2 * 2
    assert set(restart.RULES) == set(CELLS) == set(EXPECTED)


@pytest.mark.parametrize(
    "cell",
    CELLS,
    ids=[f"{c.record}-{c.inventory}-{'task' if c.task else 'none'}-{c.adopt}" for c in CELLS],
)
def test_every_cell_has_the_written_down_action(cell: Situation) -> None:
    assert restart.decide(cell) is EXPECTED[cell]


def test_what_never_happens() -> None:
    # the promises behind the table, stated once more as properties of all of it
    for cell, action in restart.RULES.items():
        if action in (Action.SWEEP, Action.REPORT):  # only a listed machine nobody holds alive
            assert cell.inventory is Inventory.LISTED and not cell.task
            assert isinstance(cell.record, Unrecorded) or cell.record not in ALIVE_VM_STATES
        if cell.record is Unrecorded.FOREIGN and not cell.adopt:
            assert action is not Action.SWEEP  # a machine the store never made is never killed
        if action in (Action.LOST, Action.GONE):  # only on the backend's word
            assert cell.inventory is Inventory.UNLISTED
        if cell.record is VMState.SPAWNING:
            assert action not in (Action.LOST, Action.GONE)  # a listing may lag a creation
        if cell.record is VMState.FORGOTTEN:
            assert action in (Action.KEEP, Action.LEAVE)  # a tombstone: never swept, --adopt too


@pytest.mark.parametrize(
    ("name", "state", "issued", "record"),
    [
        ("p-000003", VMState.READY, 5, VMState.READY),
        ("p-000003", None, 5, Unrecorded.PURGED),
        ("p-000005", None, 5, Unrecorded.PURGED),
        ("p-000006", None, 5, Unrecorded.FOREIGN),
        ("p-000001", None, 0, Unrecorded.FOREIGN),  # a store with no history of the pool
        ("p-0000001", None, 1, Unrecorded.FOREIGN),  # not how the store writes its names
        ("p-1000000", None, 1_000_000, Unrecorded.PURGED),
        ("p-leaked", None, 5, Unrecorded.FOREIGN),
        ("p-000000", None, 5, Unrecorded.FOREIGN),
        ("q-000001", None, 5, Unrecorded.FOREIGN),  # another pool's name
        ("p-1-000001", None, 5, Unrecorded.FOREIGN),  # pool p-1's, not p's
        ("xp-000001", None, 5, Unrecorded.FOREIGN),
    ],
)
def test_classify_by_the_names_the_store_issued(
    name: str, state: VMState | None, issued: int, record: restart.Record
) -> None:
    assert restart.classify(name, "p", state, issued) == record


def test_classify_escapes_the_pool_name() -> None:
    assert restart.classify("a.b-000001", "a.b", None, 1) is Unrecorded.PURGED
    assert restart.classify("axb-000001", "a.b", None, 1) is Unrecorded.FOREIGN


def test_docs_table_is_current() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "backends.md").read_text()
    found = re.search(r"<!-- restart-rules -->\n(.*?)\n<!-- /restart-rules -->", text, re.S)
    assert found is not None, "docs/backends.md lacks the restart-rules block"
    assert found.group(1) == restart.markdown(), (
        "docs/backends.md: the restart rules are stale; paste corral.pools.restart.markdown()"
    )
