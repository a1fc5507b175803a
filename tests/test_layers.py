"""The layers import only what they may: the server never takes its models from the client, the
client never pulls in the server, and the pure lifecycle and task tables pull in no I/O."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _imported(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_server_does_not_import_the_client() -> None:
    loaded = _imported("corral.api.app")
    assert not {m for m in loaded if m == "corral.client" or m.startswith("corral.client.")}


def test_the_client_does_not_import_the_server() -> None:
    loaded = _imported("corral.client")
    server = ("fastapi", "sqlalchemy", "alembic", "corral.api", "corral.controller", "corral.store")
    assert not {m for m in loaded if m.startswith(server)}


@pytest.mark.parametrize("module", ["corral.pools.lifecycle", "corral.wire"])
def test_pure_modules_pull_in_no_io(module: str) -> None:
    loaded = _imported(module)
    assert not {m for m in loaded if m.startswith(("asyncio", "sqlalchemy", "httpx", "fastapi"))}
