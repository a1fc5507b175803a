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

import sys
from typing import TYPE_CHECKING


def _import_httpx_without_its_command_line() -> None:
    """Import httpx without ``httpx._main``, its own command line tool, and leave no trace.

    ``import httpx`` runs ``from ._main import main``, which imports click, pygments and rich's
    progress, live and syntax modules whenever they are installed (corral's CLI brings them):
    about a sixth of the instructions of ``import corral.client`` and a fifth of a client
    process's start (issue 14). A ``None`` in ``sys.modules`` makes that import raise
    ``ImportError``, which httpx catches by defining a stub ``main``. Unlike the ``corral``
    command (:func:`corral.cli.entry.skip_httpx_cli`), a library must not change what the
    program importing it can import, so the ``None`` is removed again at once: ``import
    httpx._main`` still works afterwards; only the attribute ``httpx.main`` of a process that
    imported corral's client before httpx is httpx's stub (httpx's own ``httpx`` command runs
    in a process of its own, which never gets here first).
    """
    if "httpx" in sys.modules:
        return
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx  # noqa: F401
    finally:
        if blocked and "httpx._main" in sys.modules and sys.modules["httpx._main"] is None:
            del sys.modules["httpx._main"]


_import_httpx_without_its_command_line()

from corral.client.models import VM, LockStatus, PoolStatus, Task, Ticket  # noqa: E402
from corral.client.sync import Client  # noqa: E402

if TYPE_CHECKING:
    from corral.client.aio import AsyncClient

__all__ = ["VM", "AsyncClient", "Client", "LockStatus", "PoolStatus", "Task", "Ticket"]


def __getattr__(name: str) -> object:
    """``AsyncClient``, imported when first asked for (PEP 562)."""
    if name == "AsyncClient":
        from corral.client.aio import AsyncClient

        return AsyncClient
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
