"""Fixtures for the task engine tests: a registry of recording steps and engines on each store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from store.pg import pg_schema_url, pg_session_db  # tests/store/pg.py (tests/ is on sys.path)

from corral import exceptions
from corral.locks import LockManager
from corral.store import Store, open_store
from corral.store.types import JSON
from corral.tasks import JobContext, StepRegistry, TaskEngine

__all__ = ["pg_schema_url", "pg_session_db"]


@dataclass
class World:
    """What the steps did, in order, and knobs the tests turn."""

    log: list[str] = field(default_factory=list)
    gates: dict[str, asyncio.Event] = field(default_factory=dict)
    entered: dict[str, asyncio.Event] = field(default_factory=dict)

    def gate(self, name: str) -> asyncio.Event:
        return self.gates.setdefault(name, asyncio.Event())

    def was_entered(self, name: str) -> asyncio.Event:
        return self.entered.setdefault(name, asyncio.Event())


def make_registry() -> StepRegistry:
    """Steps used across the tests; they record into ``ctx.deps`` (a :class:`World`)."""
    reg = StepRegistry()

    @reg.job("make")
    async def make(ctx: JobContext, *, name: str, value: JSON = None) -> JSON:
        await ctx.push_recovery("unmake", name=name)
        ctx.deps.log.append(f"make {name}")
        return value

    @reg.job("boom")
    async def boom(ctx: JobContext, *, name: str = "boom") -> JSON:
        ctx.deps.log.append(f"boom {name}")
        raise exceptions.BackendError(f"{name} exploded")

    @reg.job("hold")
    async def hold(ctx: JobContext, *, name: str) -> JSON:
        """Push a recovery, then wait for the test to open the gate."""
        await ctx.push_recovery("unmake", name=name)
        ctx.deps.log.append(f"hold {name}")
        ctx.deps.was_entered(name).set()
        await ctx.deps.gate(name).wait()
        ctx.deps.log.append(f"held {name}")
        return name

    @reg.job("sentinel-then-coarse")
    async def coarse(ctx: JobContext, *, name: str) -> JSON:
        await ctx.push_sentinel()
        for part in ("a", "b", "c"):
            await ctx.push_recovery("unmake", name=f"{name}.{part}")
        ctx.progress("parts made")
        await ctx.replace_recoveries("unmake", name=f"{name}.all")
        ctx.deps.log.append(f"coarse {name}")
        return None

    @reg.recovery("unmake")
    async def unmake(ctx: JobContext, *, name: str) -> JSON:
        ctx.deps.log.append(f"unmake {name}")
        return None

    @reg.recovery("bad-unmake")
    async def bad_unmake(ctx: JobContext, *, name: str) -> JSON:
        ctx.deps.log.append(f"bad-unmake {name}")
        raise exceptions.BackendError(f"cannot unmake {name}")

    @reg.recovery("slow-unmake")
    async def slow_unmake(ctx: JobContext, *, name: str) -> JSON:
        ctx.deps.log.append(f"slow-unmake {name}")
        ctx.deps.was_entered(f"undo {name}").set()
        await ctx.deps.gate(f"undo {name}").wait()
        return None

    @reg.job("make-bad-undo")
    async def make_bad_undo(ctx: JobContext, *, name: str) -> JSON:
        await ctx.push_recovery("bad-unmake", name=name)
        ctx.deps.log.append(f"make {name}")
        return None

    @reg.job("make-slow-undo")
    async def make_slow_undo(ctx: JobContext, *, name: str) -> JSON:
        await ctx.push_recovery("slow-unmake", name=name)
        ctx.deps.log.append(f"make {name}")
        return None

    return reg


@pytest.fixture
def world() -> World:
    return World()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        # the engine's PostgreSQL runs are slow-marked to keep the default suite short; the
        # store's own contract suite runs on PostgreSQL by default
        pytest.param("postgresql", marks=[pytest.mark.postgres, pytest.mark.slow]),
    ]
)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh store of each kind."""
    if request.param == "memory":
        url = "memory://"
    elif request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'tasks.db'}"
    else:
        url = str(request.getfixturevalue("pg_schema_url"))
    opened = await open_store(url)
    try:
        yield opened
    finally:
        await opened.close()


EngineFactory = Callable[..., Awaitable[TaskEngine]]


@pytest.fixture
async def make_engine(store: Store, world: World) -> AsyncIterator[EngineFactory]:
    """Build started engines on the test's store; all are closed at the end."""
    engines: list[TaskEngine] = []

    async def factory(**kwargs: object) -> TaskEngine:
        locks = kwargs.pop("locks", None) or LockManager()
        engine = TaskEngine(store, locks, make_registry(), deps=world, **kwargs)  # type: ignore[arg-type]
        engines.append(engine)
        await engine.start()
        return engine

    yield factory
    for engine in engines:
        await engine.close()


@pytest.fixture
async def engine(make_engine: EngineFactory) -> TaskEngine:
    return await make_engine()
