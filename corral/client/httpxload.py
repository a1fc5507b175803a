"""httpx, imported when a client first needs it, without its command line tool.

``import corral.client`` does not import httpx: the ``corral`` command sends its requests to a
plain ``http://`` server through :mod:`corral.client.plainhttp` and never needs it (issue 14).
A :class:`~corral.client.Client` made without its own ``http`` client, the event stream and
:class:`~corral.client.AsyncClient` load it here.
"""

from __future__ import annotations

import sys
from types import ModuleType


def load() -> ModuleType:
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
    loaded = sys.modules.get("httpx")
    if loaded is not None:
        return loaded
    blocked = "httpx._main" not in sys.modules
    if blocked:
        sys.modules["httpx._main"] = None  # type: ignore[assignment]
    try:
        import httpx
    finally:
        if blocked and "httpx._main" in sys.modules and sys.modules["httpx._main"] is None:
            del sys.modules["httpx._main"]

    return httpx
