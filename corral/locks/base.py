"""What the asyncio and the thread lock managers share, with no waiting and no event loop.

Argument checking, the request object handed to callers, the :class:`Held` lock context, guarded
objects, ``status``/``release_all``/``downgrade`` and the deferred release of garbage-collected
locks. The twins (:mod:`corral.locks.manager`, :mod:`corral.locks.threads`) add only how to wait
and how to wake a waiter.

This module must not block, await or sleep, and must never call user code (factories,
``close()``, ``on_wait``) while holding the manager's lock.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from corral import exceptions
from corral.locks import keys as _keys
from corral.locks.guarded import Factory, GuardedEntry, GuardedRef, GuardedRegistry
from corral.locks.keys import EXCLUSIVE, SHARED, Mode
from corral.locks.status import ResourceStatus
from corral.locks.table import G_MODE, G_TOKEN, GRANTED, NEW, Grant, LockTable, Request

KeySpec = str | tuple[str, str | Mode] | Mapping[str, str] | Mapping[str, Mode]


class ShellRequest(Request):
    """A table request plus what a shell needs: its manager, its waiter, its guarded objects."""

    __slots__ = ("guards", "manager", "on_wait")

    def __init__(
        self,
        manager: BaseLockManager[Any],
        owner: str,
        keys: tuple[str, ...],
        modes: tuple[Mode, ...],
        timeout: float | None,
        on_wait: Callable[[], object] | None,
    ) -> None:
        # BaseLockManager.acquire builds requests without this call (it is the hot path) and
        # sets the same slots: keep both in step (tests/locks/test_shells.py checks it).
        self.manager = manager
        self.on_wait = on_wait
        self.waiter = None
        self.guards: dict[str, GuardedEntry] | None = None
        self.owner = owner
        self.keys = keys
        self.modes = modes
        self.timeout = timeout
        self.state = NEW


_new = object.__new__


def _released(req: Request) -> exceptions.LockReleased:
    """The error for using a lock context whose lock was released (by it or ``release_all``)."""
    return exceptions.LockReleased(f"the lock of {req.owner!r} on {list(req.keys)} was released")


class Held:
    """A granted lock: fencing tokens, guarded objects, release. Also the lock context argument
    that :func:`corral.locks.require_exclusive` checks.

    Release it (``release()``, or leave the ``with`` block that made it). One that is
    garbage-collected while still held emits a ``ResourceWarning`` and is released.
    """

    # One slot: the manager is the request's (one store less on every acquisition).
    __slots__ = ("_request",)

    def __init__(self, request: ShellRequest) -> None:
        self._request = request

    @property
    def owner(self) -> str:
        """The owner the lock was granted to."""
        return self._request.owner

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys of this lock, sorted."""
        return self._request.keys

    @property
    def released(self) -> bool:
        """Whether the lock has been released (by ``release()``, the block, or ``release_all``)."""
        return self._request.state is not GRANTED

    @property
    def exclusive(self) -> bool:
        """Whether at least one key is held exclusively right now."""
        req = self._request
        return req.state is GRANTED and any(g[G_MODE] is EXCLUSIVE for g in req.grants.values())

    def holds(self, key: str) -> bool:
        """Whether this lock still holds ``key``."""
        req = self._request
        return req.state is GRANTED and key in req.grants

    def mode(self, key: str) -> Mode:
        """The mode ``key`` is held in now (it changes with upgrade/downgrade)."""
        return self._grant(key)[G_MODE]

    def token(self, key: str) -> int:
        """The fencing token of the grant of ``key``: strictly increasing per resource.

        Pass it along with every change made under the lock, so that whoever applies the change
        can refuse one carrying an older token than it has seen (``check_token`` does this in
        process, raising ``StaleToken``). The task engine hands its ``vm/<name>`` tokens to the
        backends that check them (``corral.backends.fencing``).
        """
        return self._grant(key)[G_TOKEN]

    def _grant(self, key: str) -> Grant:
        req = self._request
        grant = req.grants.get(key)
        if req.state is not GRANTED or grant is None:
            if req.state is not GRANTED and key in req.keys:
                raise exceptions.LockReleased(f"the lock on {key!r} has been released")
            raise exceptions.NotHeld(f"this lock of {req.owner!r} does not hold {key!r}")
        return grant

    def ref(self, key: str) -> GuardedRef:
        """The reference to the guarded object of ``key`` (see ``register_namespace``)."""
        self._grant(key)
        guards = self._request.guards
        entry = guards.get(key) if guards else None
        if entry is None:
            raise exceptions.InvalidInput(
                f"no guarded-object factory is registered for the namespace of {key!r}"
            )
        return GuardedRef(self, key, entry)

    def release(self, key: str | None = None) -> None:
        """Release the lock (every key; idempotent), or only ``key`` (``NotHeld`` if not held)."""
        if key is None:
            self._request.manager._release_request(self._request)
        else:
            self._request.manager._release_key(self._request, key)

    def downgrade(self) -> None:
        """Turn every exclusive key into shared; waiting shared requests at the head enter."""
        self._request.manager._downgrade(self._request)

    def __repr__(self) -> str:
        req = self._request
        return f"<Held {req.owner!r} {list(req.keys)} {req.state}>"

    def _collected(self) -> None:
        """``__del__`` of the held objects no ``with`` block releases (see the shells)."""
        req = self._request
        if req.state is GRANTED:
            warnings.warn(
                f"lock on {list(req.keys)} held by {req.owner!r} was garbage-collected without "
                "release; releasing it",
                ResourceWarning,
                stacklevel=1,
            )
            # Never release here: a collection can run inside the table's critical section.
            req.manager._orphan(req)


RequestT = TypeVar("RequestT", bound=ShellRequest)
_INF = float("inf")
_ONE_MODE: dict[str, tuple[Mode]] = {SHARED: (SHARED,), EXCLUSIVE: (EXCLUSIVE,)}
_valid_singles = _keys.valid_singles
_valid_owners = _keys.valid_owners


HeldT = TypeVar("HeldT", bound=Held)


class BaseLockManager(Generic[RequestT]):
    """The manager surface both twins share; they add how to wait and how to wake."""

    _request_class: type[RequestT]

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._table = LockTable()
        self._guarded = GuardedRegistry()
        self._factories = self._guarded.factories
        self._lock = threading.Lock()
        self._orphans: list[ShellRequest] = []

    def acquire(
        self,
        *keys: KeySpec,
        mode: str | Mode = "exclusive",
        owner: str,
        timeout: float | None = None,
        on_wait: Callable[[], object] | None = None,
    ) -> RequestT:
        """A request for ``keys`` (each a key, a ``(key, mode)`` pair or a key->mode mapping).

        Nothing is requested until the result is entered (``with``/``async with``) or waited
        for (``wait()``/``await``). Keys are deduplicated and taken in sorted order, all or
        nothing; one key in two modes is ``InvalidInput``. ``on_wait()`` is called once, by the
        requester, if the request has to queue. Raises ``AlreadyHeld`` if ``owner`` holds or
        waits for one of the keys, ``LockTimeout`` after ``timeout`` seconds (float; ``None``
        waits forever).
        """
        # Validation is inlined for the common call: one key and an owner seen before (both
        # found in caches of valid values), a mode, a float timeout.
        key_t: tuple[str, ...]
        modes: tuple[Mode, ...]
        try:
            key_t = _valid_singles[keys]  # type: ignore[index]
            modes = _ONE_MODE[mode]
        except (KeyError, TypeError):
            key_t, modes = _keys.normalize_request(keys, mode)
        if type(owner) is not str or owner not in _valid_owners:
            owner = _keys.validate_owner(owner)
        if timeout is not None and (type(timeout) is not float or not 0.0 <= timeout < _INF):
            timeout = _keys.validate_timeout(timeout)
        if on_wait is not None and not callable(on_wait):
            raise exceptions.InvalidInput("on_wait must be a callable or None")
        # ShellRequest.__init__, inlined: object.__new__ plus slot stores skip the slow
        # class-call path of CPython 3.11 (about a tenth of an uncontended acquire/release).
        req = _new(self._request_class)
        req.manager = self
        req.on_wait = on_wait
        req.waiter = None
        req.guards = None
        req.owner = owner
        req.keys = key_t
        req.modes = modes
        req.timeout = timeout
        req.state = NEW
        return req

    # --- surface ----------------------------------------------------------------------------

    def register_namespace(self, namespace: str, factory: Factory) -> None:
        """Guard the keys of ``namespace`` with objects made by ``factory(key)``.

        The object is created on the first acquisition of a key and closed (if it has
        ``close()``) when its last holder releases; holders reach it via ``held.ref(key).obj``.
        """
        namespace = _keys.validate_namespace(namespace)
        if not callable(factory):
            raise exceptions.InvalidInput(f"factory for namespace {namespace!r} is not callable")
        with self._lock:
            self._factories[namespace] = factory

    def status(self) -> list[ResourceStatus]:
        """Every held or awaited resource: mode, holders (owner, since, token), queue."""
        self._reap()
        with self._lock:
            return self._table.status()

    def last_token(self, key: str) -> int:
        """The newest fencing token issued for ``key`` (0 if never granted)."""
        key = _keys.validate_key(key)
        with self._lock:
            return self._table.last_token(key)

    def check_token(self, key: str, token: int) -> None:
        """Raise ``StaleToken`` if a newer grant of ``key`` than ``token`` has been made."""
        latest = self.last_token(key)
        if type(token) is not int or token < latest:
            raise exceptions.StaleToken(
                f"token {token!r} for {key!r} is stale: the newest grant has token {latest}"
            )

    def release_all(self, owner: str) -> None:
        """Release everything ``owner`` holds and cancel everything it waits for."""
        owner = _keys.validate_owner(owner)
        self._reap()
        with self._lock:
            affected, wake = self._table.release_all(owner, self._clock())
            closing = self._settle(wake, affected)
            waiters = [r.waiter for r in affected] + [r.waiter for r in wake]
        self._after(waiters, closing)

    # --- shared machinery ---------------------------------------------------------------------

    def _settle(
        self, wake: Sequence[Request], released: Sequence[Request] = ()
    ) -> list[GuardedEntry] | None:
        """Under the lock: count new holders of guarded objects, uncount released ones."""
        if not self._factories:
            return None
        guarded = self._guarded
        closing: list[GuardedEntry] = []
        for req in cast(Sequence[ShellRequest], released):
            if req.guards:
                closing.extend(guarded.exit(req))
        for req in cast(Sequence[ShellRequest], wake):
            if req.state is GRANTED and req.guards is None:
                guarded.enter(req)
        return closing

    def _after(self, waiters: list[object], closing: list[GuardedEntry] | None) -> None:
        """Outside the lock: wake waiters, close guarded objects, then handle orphans."""
        if waiters:
            self._notify(waiters)
        if closing:
            for entry in closing:
                entry.close()
        if self._orphans:
            self._reap()

    def _notify(self, waiters: list[object]) -> None:
        raise NotImplementedError

    def _orphan(self, req: ShellRequest) -> None:
        raise NotImplementedError

    def _release_request(self, req: ShellRequest) -> None:
        """Release ``req`` if it is held; nothing if it was already released."""
        with self._lock:
            if req.state is not GRANTED:
                return
            wake = self._table.release_lazy(req, self._clock)
            closing = self._settle(wake, (req,))
            waiters = [r.waiter for r in wake]
        self._after(waiters, closing)

    def _release_key(self, req: ShellRequest, key: str) -> None:
        key = _keys.validate_key(key)
        with self._lock:
            if req.state is not GRANTED or key not in req.grants:
                raise exceptions.NotHeld(f"this lock of {req.owner!r} does not hold {key!r}")
            wake = self._table.release_key(req.owner, key, self._clock())
            closing = self._settle(wake)
            if req.guards:
                closing = (closing or []) + self._guarded.exit(req, (key,))
            waiters = [r.waiter for r in wake]
        self._after(waiters, closing)

    def _downgrade(self, req: ShellRequest) -> None:
        with self._lock:
            if req.state is not GRANTED:
                raise _released(req)
            wake = self._table.downgrade(req, self._clock())
            closing = self._settle(wake)
            waiters = [r.waiter for r in wake]
        self._after(waiters, closing)

    def _new_held(self, req: ShellRequest, cls: type[HeldT]) -> HeldT:
        """Wrap a granted request; create its guarded objects (user code, outside the lock)."""
        held = cls(req)
        if req.guards:
            try:
                for entry in req.guards.values():
                    entry.materialize()
            except BaseException:
                self._release_request(req)
                raise
        return held

    def _reap(self) -> None:
        """Release the locks of garbage-collected ``Held`` objects (from a safe context)."""
        orphans = self._orphans
        while orphans:
            self._release_request(orphans.pop())
