"""The backend contract suite (tests/backends/test_contract.py) run against the EC2 backend on
moto's EC2 server: the same tests, with this module's ``implementation`` and ``backend``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.backends.base import Backend

from .. import test_contract as contract
from ..test_contract import *  # noqa: F403 - the contract's tests, collected here again
from .cloudsim import MotoServer
from .conftest import make_ec2


@pytest.fixture
def implementation() -> str:
    """Only the EC2 backend here."""
    return "ec2"


@pytest.fixture
async def backend(
    moto: MotoServer, ami: str, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Backend]:
    """An EC2 backend on moto in a namespace of its own; its inventory lives in moto."""

    def factory(_path: Path) -> Backend:
        return make_ec2(moto.url, ami, namespace=namespace)

    monkeypatch.setitem(contract.IMPLEMENTATIONS, "ec2", factory)
    monkeypatch.setattr(contract, "PERSISTENT", contract.PERSISTENT | {"ec2"})
    instance = factory(tmp_path)
    yield instance
    await instance.aclose()
