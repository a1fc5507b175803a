"""corral's HTTP API (SPEC §7): FastAPI app, bearer-token auth, Prometheus metrics, error mapping.

``create_app(controller, config)`` returns the ASGI app; ``corral serve`` runs it with uvicorn.
This package must not contain controller logic: it authenticates, translates and delegates.
"""

from __future__ import annotations

from corral.api.app import create_app

__all__ = ["create_app"]
