"""The controller (SPEC §6): the daemon that keeps pools ready and hands VMs to tickets.

``Controller`` is the facade the API, CLI and client use (see docs/architecture.md); ``EventBus``
carries ticket, VM and task changes. This package must not import the surfaces.
"""

from __future__ import annotations

from corral.controller.controller import Controller
from corral.controller.events import Event, EventBus, Subscription

__all__ = ["Controller", "Event", "EventBus", "Subscription"]
