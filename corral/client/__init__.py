"""The Python client of corral's HTTP API: :class:`Client` (blocking) and :class:`AsyncClient`.

Both share one I/O-free core (:mod:`corral.client.core`) and return the typed models of
:mod:`corral.client.models`; server errors are re-raised as the same :mod:`corral.exceptions`
classes::

    from corral.client import Client

    with Client("http://127.0.0.1:8642", token="s3cret") as corral:
        with corral.acquire(pool="fedora-x86", timeout=600) as ticket:
            run_build_on(ticket.address)

This package must not import the server side (FastAPI, the controller, the store).
"""

from __future__ import annotations

from corral.client.aio import AsyncClient
from corral.client.models import VM, LockStatus, PoolStatus, Task, Ticket
from corral.client.sync import Client

__all__ = ["VM", "AsyncClient", "Client", "LockStatus", "PoolStatus", "Task", "Ticket"]
