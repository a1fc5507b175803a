"""The dashboard ``/ui``: server-rendered pages of pools, VMs, tickets, tasks and locks.

Pages are Jinja2 templates shipped in the package (``templates/``) with one stylesheet and one
small plain-JavaScript file (``static/``): nothing is built at install time and nothing is loaded
from the internet. Pages update live from the event stream. This package must not decide
anything the controller decides: it renders and forwards the operator's confirmed actions.
"""

from __future__ import annotations

from corral.api.ui.pages import router

__all__ = ["router"]
