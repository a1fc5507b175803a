"""In-memory implementations and helpers for tests — corral's own and its users'.

Everything here is the real thing minus the outside world: the in-memory store passes the same
contract suite as SQLite and PostgreSQL, and the fake backend the same backend contract as the
script backend. Use them to test code that drives corral without a database or machines::

    from corral import testing

    store = testing.memory_store()
    backend = testing.fake_backend(spawn_latency=0.0)
    clock = testing.ManualClock()
"""

from __future__ import annotations

from collections.abc import Mapping

from corral.backends import validate_options
from corral.backends.fake import FakeBackend
from corral.store.base import Store
from corral.store.memory import open_memory

__all__ = ["FakeBackend", "ManualClock", "fake_backend", "memory_store"]


class ManualClock:
    """A clock that only moves when told to: pass it wherever corral takes a ``clock``."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` (never backwards)."""
        if seconds < 0:
            raise ValueError("a ManualClock only moves forward")
        self.now += seconds


def memory_store() -> Store:
    """A fresh, empty in-memory store (the ``memory://`` store)."""
    return open_memory()


def fake_backend(pool: str = "test", **options: object) -> FakeBackend:
    """A seeded fake backend for pool ``pool`` with the given fake-backend options."""
    raw: Mapping[str, object] = {"seed": 7, **options}
    validated = validate_options("fake", raw)
    return FakeBackend(validated, pool=pool)
