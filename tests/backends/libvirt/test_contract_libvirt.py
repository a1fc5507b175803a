"""The backend contract suite (``tests/backends/test_contract.py``) run against ``libvirt`` on a
private test-driver hypervisor. The contract's own fixtures are overridden here, so its module
needs no libvirt import; the persistence test is skipped there (a private test hypervisor lives
with its connection) and covered by ``test_backend.py`` on ``test:///default``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.backends import load_backend
from corral.backends.base import Backend
from corral.backends.guard import GuardedBackend

from ..test_contract import *  # noqa: F403 - the contract's tests, collected here again
from .conftest import options, private_hypervisor


@pytest.fixture
def implementation() -> str:
    """The one implementation of this module."""
    return "libvirt"


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[Backend]:
    """A libvirt backend on a private test hypervisor with room for the suite's VMs."""
    raw = options(private_hypervisor(tmp_path))
    instance = load_backend("libvirt", raw, pool="p", base_dir=tmp_path)
    yield instance
    await instance.aclose()


@pytest.fixture
def guarded(backend: Backend) -> GuardedBackend:
    """The backend behind the guard, polling quickly."""
    return GuardedBackend(backend, call_timeout=10.0, poll_interval=0.01)
