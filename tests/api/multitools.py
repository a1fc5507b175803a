"""The configurations of the issue-15 surface tests (API, clients, CLI): multi-machine and shared
tickets (``multi_config``) and list tickets (``list_config``)."""

from __future__ import annotations

from typing import Any

from apitools import ADMIN_TOKEN, ALICE_TOKEN, BOB_TOKEN

from corral.config import CorralConfig, parse_config

FAKE = {"type": "fake"}


def _config(pools: dict[str, Any]) -> CorralConfig:
    """``pools`` on the memory store, with an admin token and two users' (alice, bob)."""
    tokens = {
        ADMIN_TOKEN: {"owner": "root", "role": "admin"},
        ALICE_TOKEN: {"owner": "alice", "role": "user"},
        BOB_TOKEN: {"owner": "bob", "role": "user"},
    }
    return parse_config({"store": "memory://", "api": {"tokens": tokens}, "pools": pools}, env={})


def multi_config() -> CorralConfig:
    """``trio``: three plain VMs (``count`` up to 3); ``shared``: one VM with two ``slots``."""
    return _config(
        {
            "trio": {"backend": FAKE, "max": 3, "max_starting": 3, "min_ready": 0},
            "shared": {"backend": FAKE, "max": 1, "max_starting": 1, "min_ready": 0, "slots": 2},
        }
    )


def list_config() -> CorralConfig:
    """``x86``: three VMs (tags x86); ``s390x``: one VM (tags s390x, one per owner)."""
    return _config(
        {
            "x86": {"backend": FAKE, "max": 3, "max_starting": 3, "tags": ["x86"]},
            "s390x": {"backend": FAKE, "max": 1, "tags": ["s390x"], "max_per_owner": 1},
        }
    )
