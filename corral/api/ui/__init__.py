"""The dashboard ``/ui``: server-rendered pages of pools, VMs, tickets, tasks and locks.

Pages are Jinja2 templates shipped in the package (``templates/``) with one stylesheet and one
small plain-JavaScript file (``static/``): nothing is built at install time and nothing is loaded
from the internet. Pages update live from the event stream. This package must not decide
anything the controller decides: it renders and forwards the operator's confirmed actions.
"""

from __future__ import annotations

from fastapi import APIRouter

from corral.api.ui import actions, pages

router = APIRouter()
"""Every dashboard route: the pages, and the admin actions and hosts page."""
router.include_router(pages.router)
router.include_router(actions.router)

__all__ = ["router"]
