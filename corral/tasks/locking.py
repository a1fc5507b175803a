"""How a task takes its locks from the lock manager (``corral.locks``, SPEC §3).

A task's locks are one ``{key: mode}`` mapping, requested in one all-or-nothing request (the
lock manager takes keys in one global order, so two tasks never wait for each other in a
cycle). The grant is kept (and released) by the engine. Must not change task state: waiting is
reported through ``on_wait`` and the engine decides.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, cast

from corral import exceptions

MODES = ("shared", "exclusive")


class HeldLike(Protocol):
    """A granted lock request (``corral.locks.AsyncHeld``)."""

    def release(self) -> None:
        """Release every key of the grant."""
        ...

    def token(self, key: str) -> int:
        """The fencing token of the grant of ``key``."""
        ...


def tokens_of(held: HeldLike, locks: Mapping[str, str]) -> dict[str, int]:
    """The fencing token of every key of a grant, read at the grant (a job's fenced writes
    carry them: issue 11); a key whose token cannot be read (released meanwhile) is left out."""
    found: dict[str, int] = {}
    for key in locks:
        try:
            found[key] = held.token(key)
        except exceptions.CorralError:
            continue
    return found


class LockManagerLike(Protocol):
    """The part of ``corral.locks.LockManager`` the engine uses."""

    def acquire(
        self,
        *keys: Mapping[str, str],
        owner: str,
        timeout: float | None = ...,
        on_wait: Callable[[], object] | None = ...,
    ) -> Awaitable[HeldLike]:
        """A request for ``keys`` (a ``{key: mode}`` mapping here); await it to be granted."""
        ...


def check_locks(locks: object) -> dict[str, str]:
    """``{key: mode}`` validated (keys as SPEC §3 says, modes shared/exclusive)."""
    from corral.locks.keys import validate_key

    if not isinstance(locks, Mapping):
        raise exceptions.InvalidInput("locks must be a mapping of resource key to mode")
    checked: dict[str, str] = {}
    for key, mode in locks.items():
        if mode not in MODES:
            raise exceptions.InvalidInput(f"lock {key!r}: mode must be shared or exclusive")
        checked[validate_key(key)] = str(mode)
    return checked


class CoveringLockManager(LockManagerLike, Protocol):
    """A lock manager whose grants a later durable commit of the caller can make durable
    (``corral.locks.pg.PgLockManager``: the grant and the task's commits share one WAL)."""

    covers_grants: bool

    def acquire(
        self,
        *keys: Mapping[str, str],
        owner: str,
        timeout: float | None = ...,
        on_wait: Callable[[], object] | None = ...,
        durable: bool = ...,
    ) -> Awaitable[HeldLike]:
        """As :meth:`LockManagerLike.acquire`; ``durable=False``: see the class."""
        ...


async def acquire(
    manager: LockManagerLike,
    locks: Mapping[str, str],
    *,
    owner: str,
    on_wait: Callable[[], object] | None,
    covered: bool = False,
) -> HeldLike:
    """Wait until ``owner`` holds every lock (no timeout); cancelling withdraws the request.

    ``covered``: the caller makes a durable commit to the store before anything acts on the
    grant (the task's recovery push, committed before its job acts), so a manager whose grants
    that commit can cover (``covers_grants``) is asked not to make its own durable commit.
    """
    if covered and getattr(manager, "covers_grants", False) is True:
        covering = cast(CoveringLockManager, manager)
        return await covering.acquire(
            dict(locks), owner=owner, timeout=None, on_wait=on_wait, durable=False
        )
    return await manager.acquire(dict(locks), owner=owner, timeout=None, on_wait=on_wait)
