"""Shared/exclusive locks on named resources (SPEC §3): one pure table, two thin shells.

- :class:`LockManager` for asyncio, :class:`ThreadLockManager` for threads; both return a
  :class:`Held` lock context with fencing tokens and guarded-object references.
- :mod:`corral.locks.table` holds every semantic as plain data and is usable on its own.

Import as ``from corral import locks`` and use ``locks.LockManager`` etc.
"""

from __future__ import annotations

from corral.exceptions import (
    AlreadyHeld,
    ExclusiveLockRequired,
    LockCancelled,
    LockReleased,
    LockRequestProcessed,
    LockTimeout,
    NotHeld,
    StaleToken,
    UpgradeConflict,
)
from corral.locks.base import Held
from corral.locks.exclusive import require_exclusive
from corral.locks.guarded import GuardedRef
from corral.locks.keys import Mode, validate_key
from corral.locks.manager import AsyncHeld, AsyncLockRequest, LockManager
from corral.locks.status import HolderStatus, ResourceStatus, WaiterStatus
from corral.locks.table import LockTable
from corral.locks.threads import ThreadHeld, ThreadLockManager, ThreadLockRequest

__all__ = [
    "AlreadyHeld",
    "AsyncHeld",
    "AsyncLockRequest",
    "ExclusiveLockRequired",
    "GuardedRef",
    "Held",
    "HolderStatus",
    "LockCancelled",
    "LockManager",
    "LockReleased",
    "LockRequestProcessed",
    "LockTable",
    "LockTimeout",
    "Mode",
    "NotHeld",
    "ResourceStatus",
    "StaleToken",
    "ThreadHeld",
    "ThreadLockManager",
    "ThreadLockRequest",
    "UpgradeConflict",
    "WaiterStatus",
    "require_exclusive",
    "validate_key",
]
