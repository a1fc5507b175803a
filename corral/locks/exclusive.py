"""``require_exclusive``: refuse to run a function whose lock context holds only shared locks.

Ironic's ``require_exclusive_lock``, for sync and async functions. The lock context is the first
argument (positional or keyword) that is a :class:`~corral.locks.base.Held`, or that carries one
as its ``held`` attribute (a task's job context, for instance). This module must not acquire or
release anything.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

from corral import exceptions
from corral.locks.base import Held

P = ParamSpec("P")
R = TypeVar("R")


def _context(args: tuple[object, ...], kwargs: dict[str, object]) -> Held | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Held):
            return value
        held = getattr(value, "held", None)
        if isinstance(held, Held):
            return held
    return None


def _check(name: str, args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    held = _context(args, kwargs)
    if held is None:
        raise exceptions.ExclusiveLockRequired(f"{name}() needs a lock context argument")
    if held.released:
        raise exceptions.LockReleased(f"{name}() was given a lock context that was released")
    if not held.exclusive:
        raise exceptions.ExclusiveLockRequired(
            f"{name}() requires an exclusive lock; {held.owner!r} holds {list(held.keys)} shared"
        )


def require_exclusive(func: Callable[P, R]) -> Callable[P, R]:
    """Decorate ``func`` so it raises ``ExclusiveLockRequired`` unless its lock context holds at
    least one exclusive lock (``LockReleased`` if the context was released)."""
    name = getattr(func, "__qualname__", repr(func))
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            _check(name, args, kwargs)
            return await func(*args, **kwargs)

        return cast(Callable[P, R], async_wrapper)

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        _check(name, args, kwargs)
        return func(*args, **kwargs)

    return wrapper
