"""``ThreadLockManager``: the lock table behind one ``threading.Lock``, for blocking code.

Same semantics as the asyncio :class:`~corral.locks.manager.LockManager`. A waiting thread
blocks on a private lock of its own that the granting thread releases (after leaving the
critical section), so the table's lock is held only for the table operation itself.

This module must not call user code (``on_wait``, factories, ``close()``) while holding the
table's lock, and must not release locks from inside ``__del__`` (a reaper thread does that).
"""

from __future__ import annotations

import operator
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType

from corral import exceptions
from corral.locks import keys as _keys
from corral.locks.base import BaseLockManager, Held, ShellRequest, _released
from corral.locks.table import CANCELLED, GRANTED, WAITING

_new_lock = threading.Lock
_new = object.__new__
_waiter_of = operator.attrgetter("waiter")
_MAX_WAIT = threading.TIMEOUT_MAX


class ThreadHeld(Held):
    """A lock granted by a :class:`ThreadLockManager`."""

    __slots__ = ()
    _request: ThreadLockRequest

    def upgrade(self, timeout: float | None = None) -> None:
        """Make every shared key exclusive; blocks until this holder is the sole holder of each.

        ``UpgradeConflict`` at once if another holder is already upgrading one of the keys;
        ``LockTimeout`` (and nothing upgraded) if not done within ``timeout`` seconds.
        """
        timeout = _keys.validate_timeout(timeout)
        self._request.manager._upgrade(self._request, timeout)


class _LooseThreadHeld(ThreadHeld):
    # Returned by wait(): no with block will release it, so garbage collection must.
    __slots__ = ()

    def __del__(self) -> None:
        self._collected()


class ThreadLockRequest(ShellRequest):
    """What ``ThreadLockManager.acquire`` returns: use it in ``with``, or call ``wait()``."""

    __slots__ = ()
    manager: ThreadLockManager

    def wait(self) -> ThreadHeld:
        """Block until granted and return the lock; release it with ``held.release()``."""
        return self._acquire(_LooseThreadHeld)

    def __enter__(self) -> ThreadHeld:
        # _acquire(ThreadHeld), inlined: this is half of every acquire/release.
        m = self.manager
        if m._orphans:
            m._reap()
        lock = m._lock
        lock.acquire()
        try:
            m._table.submit(self, m._clock())
        except BaseException:
            lock.release()
            raise
        if m._factories:
            return self._acquired(ThreadHeld, lock)
        if self.state is GRANTED:
            lock.release()
            held = _new(ThreadHeld)  # ThreadHeld(self) without the slow class call
            held._request = self
            return held
        waiter = self.waiter = _new_lock()
        waiter.acquire()
        lock.release()
        return self._wait_slow(ThreadHeld)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # ThreadLockManager._release_request, inlined: this is half of every acquire/release.
        m = self.manager
        lock = m._lock
        lock.acquire()
        if self.state is not GRANTED:
            lock.release()
            return
        wake = m._table.release_lazy(self, m._clock)
        if self.guards:
            try:
                closing = m._settle(wake, (self,))
                waiters = [r.waiter for r in wake]
            finally:
                lock.release()
            m._after(waiters, closing)
            return
        if wake:
            if m._factories:
                m._settle(wake)
            # The waiters are read under the lock: a woken holder may wait again (upgrade) with
            # a new waiter as soon as the lock is free.
            if len(wake) == 1:  # the exclusive hand-over: no list on the critical path
                waiter = wake[0].waiter
                lock.release()
                try:
                    waiter.release()  # type: ignore[attr-defined]
                except RuntimeError:
                    pass  # a waiter that is not waiting any more
            else:
                waiters = list(map(_waiter_of, wake))  # no comprehension frame
                lock.release()
                for waiter in waiters:  # hand over: wake the new holders
                    try:
                        waiter.release()  # type: ignore[attr-defined]
                    except RuntimeError:
                        pass  # a waiter that is not waiting any more
        else:
            lock.release()
        if m._orphans:
            m._reap()

    def _acquire(self, cls: type[ThreadHeld]) -> ThreadHeld:
        m = self.manager
        if m._orphans:
            m._reap()
        lock = m._lock
        lock.acquire()  # not ``with``: explicit calls are measurably cheaper on this path
        try:
            m._table.submit(self, m._clock())
        except BaseException:
            lock.release()
            raise
        return self._acquired(cls, lock)

    def _acquired(self, cls: type[ThreadHeld], lock: threading.Lock) -> ThreadHeld:
        # Called with the manager's lock held, right after submit.
        m = self.manager
        if self.state is GRANTED:
            if m._factories:
                m._guarded.enter(self)
                lock.release()
                return m._new_held(self, cls)
            lock.release()
            return cls(self)
        waiter = self.waiter = _new_lock()
        waiter.acquire()
        lock.release()
        return self._wait_slow(cls)

    def _wait_slow(self, cls: type[ThreadHeld]) -> ThreadHeld:
        m = self.manager
        waiter: threading.Lock = self.waiter  # type: ignore[assignment]  # (no cast() call)
        if m._kick is None:
            m._start_reaper()
        try:
            if self.on_wait is not None:
                self.on_wait()
            timeout = self.timeout
            got = waiter.acquire(True, -1 if timeout is None or timeout > _MAX_WAIT else timeout)
        except BaseException:
            m._abandon(self)
            raise
        if not got and m._give_up(self):
            raise exceptions.LockTimeout(
                f"{list(self.keys)} not granted to {self.owner!r} within {self.timeout}s"
            )
        if self.state is GRANTED:
            if self.guards:
                return m._new_held(self, cls)
            held = _new(cls)
            held._request = self
            return held
        if self.state is CANCELLED:
            raise exceptions.LockCancelled(
                f"request of {self.owner!r} for {list(self.keys)} {self.cancel_reason}"
            )
        raise exceptions.LockCancelled(
            f"lock of {self.owner!r} on {list(self.keys)} was released before its waiter resumed"
        )


class ThreadLockManager(BaseLockManager[ThreadLockRequest]):
    """Shared/exclusive locks on named resources for threads (SPEC §3), thread-safe.

    ``with locks.acquire("vm/a", mode="shared", owner="reader-7", timeout=1.0) as held: ...``
    or ``held = locks.acquire(...).wait()`` … ``held.release()``.
    """

    _request_class = ThreadLockRequest

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._kick: threading.Lock | None = None

    # --- waiting and waking -------------------------------------------------------------------

    def _notify(self, waiters: list[object]) -> None:
        for waiter in waiters:
            if waiter is not None:
                try:
                    waiter.release()  # type: ignore[attr-defined]
                except RuntimeError:
                    pass  # a waiter that is not waiting any more (woken twice, timed out)

    def _release_request(self, req: ShellRequest) -> None:
        with self._lock:
            if req.state is not GRANTED:
                return
            wake = self._table.release_lazy(req, self._clock)
            if wake or req.guards:
                closing = self._settle(wake, (req,))
                waiters: list[object] = [r.waiter for r in wake]
            else:
                closing = None
                waiters = []
        if waiters or closing or self._orphans:
            self._after(waiters, closing)

    def _give_up(self, req: ThreadLockRequest) -> bool:
        """After a wait timed out: cancel ``req`` unless it was granted meanwhile."""
        with self._lock:
            if req.state is not WAITING:
                return False
            wake = self._table.cancel(req, self._clock(), reason="timed out")
            closing = self._settle(wake)
            waiters = [r.waiter for r in wake]
        self._after(waiters, closing)
        return True

    def _abandon(self, req: ThreadLockRequest) -> None:
        """The waiting thread was interrupted: withdraw ``req`` or release what it got."""
        if not self._give_up(req):
            self._release_request(req)

    def _upgrade(self, req: ThreadLockRequest, timeout: float | None) -> None:
        with self._lock:
            if req.state is not GRANTED:
                raise _released(req)
            if self._table.upgrade(req, self._clock()):
                return
            waiter = req.waiter = _new_lock()
            waiter.acquire()
        self._start_reaper()
        try:
            got = waiter.acquire(True, -1 if timeout is None or timeout > _MAX_WAIT else timeout)
        except BaseException:
            self._cancel_upgrade(req)
            raise
        if not got and self._cancel_upgrade(req):
            raise exceptions.LockTimeout(
                f"upgrade of {list(req.keys)} for {req.owner!r} not granted within {timeout}s"
            )
        if req.state is not GRANTED:
            raise exceptions.LockCancelled(f"lock of {req.owner!r} was released while upgrading")

    def _cancel_upgrade(self, req: ThreadLockRequest) -> bool:
        with self._lock:
            if not req.upgrading:
                return False
            wake = self._table.cancel_upgrade(req, self._clock())
            closing = self._settle(wake)
            waiters = [r.waiter for r in wake]
        self._after(waiters, closing)
        return True

    # --- garbage-collected locks --------------------------------------------------------------

    def _orphan(self, req: ShellRequest) -> None:
        # Called from __del__: only a list append and a raw lock release, which never block.
        self._orphans.append(req)
        kick = self._kick
        if kick is not None:
            try:
                kick.release()
            except RuntimeError:
                pass  # already kicked

    def _start_reaper(self) -> None:
        """Start, once, the thread that releases orphaned locks while others wait."""
        if self._kick is not None:
            return
        with self._lock:
            if self._kick is not None:
                return
            kick = _new_lock()
            kick.acquire()
            self._kick = kick
        weakref.finalize(self, _kick_quietly, kick)
        threading.Thread(
            target=_reaper, args=(weakref.ref(self), kick), name="corral-locks-reaper", daemon=True
        ).start()
        if self._orphans:  # orphaned before _kick was set: nobody kicked for them
            _kick_quietly(kick)


def _kick_quietly(kick: threading.Lock) -> None:
    try:
        kick.release()
    except RuntimeError:
        pass


def _reaper(ref: weakref.ref[ThreadLockManager], kick: threading.Lock) -> None:
    while True:
        kick.acquire()
        manager = ref()
        if manager is None:
            return
        manager._reap()
        del manager
