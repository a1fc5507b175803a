"""Guarded objects (vdsm's ``ResourceRef``): per-namespace factories and the references to them.

A namespace may register a factory; the object for a key is created on the first acquisition of
that key, shared by all its concurrent holders, and closed (if it has ``close()``) when the last
holder releases. A holder reaches it through a :class:`GuardedRef` that raises ``LockReleased``
once the holder's lock is released.

The reference counts change inside the managers' critical sections (plain dict operations); the
factory and ``close()`` are user code and run outside them. This module must not touch the table.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from corral import exceptions
from corral.locks.keys import namespace_of

if TYPE_CHECKING:
    from corral.locks.base import Held, ShellRequest

Factory = Callable[[str], object]

_NEW, _READY, _CLOSED = 0, 1, 2


class GuardedEntry:
    """The guarded object of one key while anyone holds the key."""

    __slots__ = ("_lock", "_obj", "_state", "count", "factory", "key")

    def __init__(self, key: str, factory: Factory) -> None:
        self.key = key
        self.factory = factory
        self.count = 0
        self._obj: object = None
        self._state = _NEW
        self._lock = threading.Lock()

    def materialize(self) -> object:
        """The object, created by the factory on first use (once, even across threads)."""
        with self._lock:
            if self._state == _READY:
                return self._obj
            if self._state == _CLOSED:
                raise exceptions.LockReleased(f"the lock guarding {self.key!r} has been released")
            obj = self.factory(self.key)
            self._obj = obj
            self._state = _READY
            return obj

    def close(self) -> None:
        """Forget the object and call its ``close()`` if it has one."""
        with self._lock:
            obj, ready = self._obj, self._state == _READY
            self._obj = None
            self._state = _CLOSED
        closer = getattr(obj, "close", None) if ready else None
        if callable(closer):
            closer()


class GuardedRegistry:
    """Factories by namespace and the live guarded objects by key. Caller serialises calls."""

    __slots__ = ("_entries", "factories")

    def __init__(self) -> None:
        self.factories: dict[str, Factory] = {}
        self._entries: dict[str, GuardedEntry] = {}

    def enter(self, req: ShellRequest) -> None:
        """Count ``req`` as a holder of the guarded objects of its keys (under the table lock)."""
        guards: dict[str, GuardedEntry] = {}
        for key in req.keys:
            factory = self.factories.get(namespace_of(key))
            if factory is None:
                continue
            entry = self._entries.get(key)
            if entry is None:
                entry = self._entries[key] = GuardedEntry(key, factory)
            entry.count += 1
            guards[key] = entry
        req.guards = guards

    def exit(self, req: ShellRequest, keys: tuple[str, ...] | None = None) -> list[GuardedEntry]:
        """Uncount ``req`` (for ``keys``, default all); returns the entries to close after."""
        guards = req.guards
        closing: list[GuardedEntry] = []
        if not guards:
            return closing
        for key in tuple(guards) if keys is None else keys:
            entry = guards.pop(key, None)
            if entry is None:
                continue
            entry.count -= 1
            if entry.count == 0:
                if self._entries.get(key) is entry:
                    del self._entries[key]
                closing.append(entry)
        return closing


class GuardedRef:
    """A holder's reference to the guarded object of one key; dies when the lock is released."""

    __slots__ = ("_entry", "_held", "key")

    def __init__(self, held: Held, key: str, entry: GuardedEntry) -> None:
        self._held = held
        self.key = key
        self._entry = entry

    @property
    def valid(self) -> bool:
        """Whether the lock behind this reference is still held."""
        return self._held.holds(self.key)

    @property
    def obj(self) -> object:
        """The guarded object; ``LockReleased`` once the lock is released."""
        if not self._held.holds(self.key):
            raise exceptions.LockReleased(f"the lock guarding {self.key!r} has been released")
        return self._entry.materialize()

    def __repr__(self) -> str:
        return f"<GuardedRef {self.key!r} valid={self.valid}>"
