"""The types the client returns and the limits it checks, as the client has always exported them.

The answers (:class:`Ticket`, :class:`VM`, ...) are the records of :mod:`corral.client.records`,
generated from :mod:`corral.wire`'s models and read without pydantic (:mod:`corral.client.record`
says why). The request models (:class:`TicketRequest`, :class:`TicketEntry`, :class:`HoldRequest`)
and :data:`Text` are :mod:`corral.wire`'s own, imported (with pydantic) when first asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from corral.client.records import (
    MAX_COUNT,
    MAX_HOLD,
    MAX_REQUESTS,
    MAX_TTL,
    MIN_TTL,
    NO_CONTROL,
    VM,
    AuditEntry,
    CommandLogEntry,
    DrainResult,
    ErrorBody,
    ErrorDetail,
    Health,
    Host,
    LockHolder,
    LockStatus,
    LockWaiter,
    Machine,
    PoolInfoEntry,
    PoolMode,
    PoolStats,
    PoolStatus,
    PoolSummary,
    ReconcileReport,
    ReloadResult,
    Task,
    Ticket,
    TicketPart,
)

if TYPE_CHECKING:
    from corral.wire import HoldRequest, Text, TicketEntry, TicketRequest

WIRE_ONLY = ("HoldRequest", "Text", "TicketEntry", "TicketRequest")
"""Names taken from :mod:`corral.wire` on first use (they need pydantic)."""

__all__ = [
    "MAX_COUNT",
    "MAX_HOLD",
    "MAX_REQUESTS",
    "MAX_TTL",
    "MIN_TTL",
    "NO_CONTROL",
    "VM",
    "AuditEntry",
    "CommandLogEntry",
    "DrainResult",
    "ErrorBody",
    "ErrorDetail",
    "Health",
    "HoldRequest",
    "Host",
    "LockHolder",
    "LockStatus",
    "LockWaiter",
    "Machine",
    "PoolInfoEntry",
    "PoolMode",
    "PoolStats",
    "PoolStatus",
    "PoolSummary",
    "ReconcileReport",
    "ReloadResult",
    "Task",
    "Text",
    "Ticket",
    "TicketEntry",
    "TicketPart",
    "TicketRequest",
]


def __getattr__(name: str) -> object:
    """The request models of :data:`WIRE_ONLY`, from :mod:`corral.wire` (PEP 562)."""
    if name in WIRE_ONLY:
        return getattr(importlib.import_module("corral.wire"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
