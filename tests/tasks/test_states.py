"""The pure state machine: SPEC §4's table, exactly, and the generated diagram."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral import exceptions
from corral.tasks import ABORTABLE, DONE, RECOVERY_ABORTABLE, TRANSITIONS, StateMachine, TaskState
from corral.tasks.diagram import render
from corral.tasks.states import can_move, mermaid

# SPEC §4's table, transcribed independently of the code.
SPEC_TABLE = """
init: preparing
preparing: blocked, acquiring, finished, aborting
blocked: preparing, aborting
acquiring: acquiring, queued, aborting
queued: running, aborting
running: queued, finished, aborting
finished: racquiring
aborting: waitrecover, racquiring, failed
waitrecover: racquiring, raborting
racquiring: racquiring, recovering, raborting
recovering: recovered, raborting, failed
raborting: failed
recovered:
failed:
"""
SPEC = {
    src.strip(): {d.strip() for d in dsts.split(",") if d.strip()}
    for src, dsts in (line.split(":") for line in SPEC_TABLE.strip().splitlines())
}
ALL_PAIRS = list(itertools.product(TaskState, TaskState))


def test_there_are_exactly_the_fourteen_states() -> None:
    assert {s.value for s in TaskState} == set(SPEC)
    assert len(TaskState) == 14
    assert set(TRANSITIONS) == set(TaskState)


@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair_is_allowed_or_refused_as_spec_says(src: TaskState, dst: TaskState) -> None:
    machine = StateMachine(src)
    if dst.value in SPEC[src.value]:
        assert can_move(src, dst)
        assert machine.move(dst) is src
        assert machine.state is dst
    else:
        assert not can_move(src, dst)
        with pytest.raises(
            exceptions.TaskStateTransitionError, match=f"{src.value} to {dst.value}"
        ):
            machine.move(dst)
        assert machine.state is src  # unchanged


def test_state_groups() -> None:
    assert {s.value for s in DONE} == {"finished", "recovered", "failed"}
    assert {s.value for s in ABORTABLE} == {
        "preparing",
        "blocked",
        "acquiring",
        "queued",
        "running",
    }
    assert {s.value for s in RECOVERY_ABORTABLE} == {"racquiring", "recovering", "waitrecover"}
    assert TRANSITIONS[TaskState.RECOVERED] == TRANSITIONS[TaskState.FAILED] == frozenset()


@given(st.lists(st.sampled_from(list(TaskState)), max_size=40))
def test_any_sequence_of_moves_follows_the_table(moves: list[TaskState]) -> None:
    machine = StateMachine()
    for dst in moves:
        before = machine.state
        try:
            machine.move(dst)
        except exceptions.TaskStateTransitionError:
            assert machine.state is before
        else:
            assert dst in TRANSITIONS[before]


def test_docs_diagram_is_generated_from_the_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "tasks.md").read_text()
    assert render(doc) == doc, (
        "docs/tasks.md is stale: run python -m corral.tasks.diagram docs/tasks.md"
    )
    assert mermaid() in doc
    for src, dsts in SPEC.items():
        for dst in dsts:
            assert f"    {src} --> {dst}\n" in mermaid()
