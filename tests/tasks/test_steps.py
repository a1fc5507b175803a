"""The step registry and the run queue (pure parts)."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.store.types import JSON
from corral.tasks import SENTINEL, JobContext, Priority, StepRegistry
from corral.tasks.queue import RunQueue
from corral.tasks.steps import dump_args


def test_registry_finds_steps_by_name_and_refuses_unknown_ones() -> None:
    reg = StepRegistry()

    @reg.job("vm.spawn")
    async def spawn(ctx: JobContext) -> JSON:
        return None

    @reg.recovery("vm.destroy")
    async def destroy(ctx: JobContext) -> JSON:
        return None

    assert reg.get_job("vm.spawn") is spawn
    assert reg.get_recovery("vm.destroy") is destroy
    assert reg.jobs() == ["vm.spawn"] and reg.recoveries() == ["vm.destroy"]
    with pytest.raises(exceptions.UnknownStep, match=r"vm\.destroy"):
        reg.get_job("vm.destroy")  # a recovery is not a job
    with pytest.raises(exceptions.UnknownStep, match="nope"):
        reg.get_recovery("nope")


def test_registry_refuses_bad_and_duplicate_names() -> None:
    reg = StepRegistry()

    async def step(ctx: JobContext) -> JSON:
        return None

    reg.job("a")(step)
    reg.job("a")(step)  # registering the same function again (re-import) is harmless

    async def other(ctx: JobContext) -> JSON:
        return None

    with pytest.raises(exceptions.InvalidInput, match="already registered"):
        reg.job("a")(other)
    for bad in ("", "x" * 256, "tab\there", SENTINEL):
        with pytest.raises(exceptions.InvalidInput):
            reg.recovery(bad)


def test_arguments_must_be_json() -> None:
    assert dump_args("s", {"a": [1, "x", None], "b": {"c": True}}) == (
        '{"a":[1,"x",null],"b":{"c":true}}'
    )
    for bad in ({"a": object()}, {"a": float("nan")}, {1: "x"}):
        with pytest.raises(exceptions.InvalidInput, match="step 's'"):
            dump_args("s", bad)  # type: ignore[arg-type]


def test_run_queue_orders_by_priority_then_fifo() -> None:
    q = RunQueue()
    for tid, prio in [
        ("l1", Priority.LOW),
        ("m1", Priority.MEDIUM),
        ("h1", Priority.HIGH),
        ("m2", Priority.MEDIUM),
        ("h2", Priority.HIGH),
        ("l2", Priority.LOW),
    ]:
        q.push(tid, prio)
    assert q.remove("m1") and not q.remove("m1")
    q.push("m1", Priority.MEDIUM)  # re-queued: now behind m2
    assert len(q) == 6 and "h1" in q
    assert [q.pop() for _ in range(7)] == ["h1", "h2", "m2", "m1", "l1", "l2", None]
    with pytest.raises(ValueError, match="already queued"):
        q.push("x", Priority.LOW)
        q.push("x", Priority.LOW)
