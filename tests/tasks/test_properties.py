"""Property test: random task plans on the memory store always follow SPEC §4."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings
from hypothesis import strategies as st

from corral.locks import LockManager
from corral.store import open_store
from corral.tasks import TRANSITIONS, Step, TaskEngine, TaskEvent, TaskState

from .conftest import World, make_registry

S = TaskState

plans = st.lists(
    st.tuples(
        st.lists(st.sampled_from(["make", "boom"]), min_size=1, max_size=4),
        st.sampled_from(["none", "manual", "auto", "resume"]),
        st.sampled_from(["low", "medium", "high"]),
        st.sampled_from([None, "vm/a", "vm/b"]),
    ),
    min_size=1,
    max_size=6,
)


async def run(plan: list[tuple[list[str], str, str, str | None]]) -> None:
    world = World()
    store = await open_store("memory://")
    engine = TaskEngine(store, LockManager(), make_registry(), deps=world, max_running=2)
    events: list[TaskEvent] = []
    engine.subscribe(events.append)
    await engine.start()
    ids = []
    for i, (kinds, recovery, priority, lock) in enumerate(plan):
        jobs = [Step(kind, {"name": f"{i}.{j}"}) for j, kind in enumerate(kinds)]
        ids.append(
            await engine.submit(
                "p",
                jobs=jobs,
                recovery=recovery,
                priority=priority,
                locks={lock: "exclusive"} if lock else {},
                clean="manual",
            )
        )
    for tid, (kinds, recovery, _, _) in zip(ids, plan, strict=True):
        info = await engine.wait(tid, timeout=10)
        failing = "boom" in kinds
        made = [
            f"{ids.index(tid)}.{j}" for j in range(kinds.index("boom") if failing else len(kinds))
        ]
        if not failing:
            assert info.state is S.FINISHED and info.jobs_done == len(kinds)
        elif recovery == "none":
            assert info.state is S.FAILED
        elif recovery == "manual":
            assert info.state is S.WAITRECOVER
            await engine.rollback(tid)
            info = await engine.wait(tid, timeout=10)
        if failing and recovery != "none":
            assert info.state is S.RECOVERED and info.recoveries == ()
            undone = [e.split(" ")[1] for e in world.log if e.startswith("unmake ")]
            assert [u for u in undone if u in made] == list(reversed(made))
    for event in events:
        assert event.state in TRANSITIONS[event.previous]
    await engine.close()
    await store.close()


@settings(max_examples=40, deadline=None)
@given(plans)
def test_random_plans_end_as_the_policies_say(
    plan: list[tuple[list[str], str, str, str | None]],
) -> None:
    asyncio.run(run(plan))
