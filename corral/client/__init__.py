"""The Python client of corral's HTTP API: :class:`Client` (blocking) and :class:`AsyncClient`.

Both share one I/O-free core (:mod:`corral.client.core`) and return the typed models of
:mod:`corral.client.models`; server errors are re-raised as the same :mod:`corral.exceptions`
classes::

    from corral.client import Client

    with Client("http://127.0.0.1:8642", token="s3cret") as corral:
        with corral.acquire(pool="fedora-x86", timeout=600) as ticket:
            run_build_on(ticket.address)

This package must not import the server side (FastAPI, the controller, the store).
:class:`AsyncClient` is imported on first use, so that the blocking client (and the ``corral``
command built on it) does not load asyncio.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from corral.client import httpxload
from corral.client.models import VM, LockStatus, PoolStatus, Task, Ticket
from corral.client.sync import Client

if TYPE_CHECKING:
    from corral.client.aio import AsyncClient

__all__ = ["VM", "AsyncClient", "Client", "LockStatus", "PoolStatus", "Task", "Ticket"]


def __getattr__(name: str) -> object:
    """``AsyncClient``, imported when first asked for (PEP 562)."""
    if name == "AsyncClient":
        httpxload.load()
        from corral.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
