"""Helpers of the API tests: configurations, tokens, the real (or stand-in) controller."""

from __future__ import annotations

from typing import Any

from corral.config import CorralConfig, parse_config
from corral.controller import Controller

ADMIN_TOKEN = "admin-token-0001"  # noqa: S105 - test token
ALICE_TOKEN = "alice-token-0001"  # noqa: S105 - test token
BOB_TOKEN = "bob-token-00001"  # noqa: S105 - test token


def make_config(
    *, tokens: bool = True, min_ready: int = 1, store: str = "memory://"
) -> CorralConfig:
    """Three pools on the fake backend and, optionally, three tokens."""
    api: dict[str, Any] = {}
    if tokens:
        api["tokens"] = {
            ADMIN_TOKEN: {"owner": "root", "role": "admin"},
            ALICE_TOKEN: {"owner": "alice", "role": "user"},
            BOB_TOKEN: {"owner": "bob", "role": "user"},
        }
    pool = {
        "backend": {"type": "fake"},
        "max": 4,
        "max_starting": 2,
        "min_ready": min_ready,
    }
    raw = {
        "store": store,
        "api": api,
        "pools": {
            "small": {**pool, "tags": ["x86_64", "fedora"]},
            "other": {**pool, "tags": ["aarch64"], "min_ready": 0},
            "tiny": {**pool, "tags": ["tiny"], "max": 1, "max_starting": 1, "min_ready": 0},
        },
    }
    return parse_config(raw, env={})


def controller_class() -> type[Controller]:
    """The real controller (the API tests run on the memory store and the fake backend)."""
    return Controller


def auth(token: str) -> dict[str, str]:
    """The Authorization header of ``token``."""
    return {"Authorization": f"Bearer {token}"}


GATES: dict[str, Any] = {}
"""asyncio.Events the ``test.api.gate`` job waits on, by name (set by the test to let it end)."""


def register_test_steps() -> None:
    """Register the test steps on the registry the controller's task engine uses (once)."""
    import asyncio

    from corral.controller.steps import REGISTRY as registry

    if "test.api.gate" in registry.jobs():
        return

    @registry.job("test.api.gate")
    async def gate(ctx: Any, *, name: str) -> Any:
        await ctx.push_recovery("test.api.undo", name=name)
        event = GATES.setdefault(name, asyncio.Event())
        await event.wait()
        return {"gate": name}

    @registry.recovery("test.api.undo")
    async def undo(ctx: Any, *, name: str) -> Any:
        return None
