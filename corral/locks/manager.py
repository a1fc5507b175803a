"""``LockManager``: the lock table for asyncio code, bound to the running event loop.

An uncontended acquire never suspends: the table grants it inline and ``await`` returns at once.
A waiting request awaits a future that the releasing task resolves; timeouts are loop timers
that withdraw the request from the table at the deadline, and a cancelled waiter is withdrawn
(or, if the grant raced the cancellation, released) so capacity never leaks.

This module must not block the loop, must not call user code from inside a table operation, and
must not release locks from inside ``__del__`` (that is deferred to the loop).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any

from corral import exceptions
from corral.locks import keys as _keys
from corral.locks.base import BaseLockManager, Held, ShellRequest, _released
from corral.locks.table import CANCELLED, GRANTED, WAITING

_new = object.__new__


class AsyncHeld(Held):
    """A lock granted by a :class:`LockManager`."""

    __slots__ = ()
    _request: AsyncLockRequest

    async def upgrade(self, timeout: float | None = None) -> None:
        """Make every shared key exclusive once this holder is the sole holder of each.

        ``UpgradeConflict`` at once if another holder is already upgrading one of the keys;
        ``LockTimeout`` (and nothing upgraded) if not done within ``timeout`` seconds.
        """
        timeout = _keys.validate_timeout(timeout)
        await self._request.manager._upgrade(self._request, timeout)


class _LooseAsyncHeld(AsyncHeld):
    # Returned by ``await``: no async with block will release it, so garbage collection must.
    __slots__ = ()

    def __del__(self) -> None:
        self._collected()


class AsyncLockRequest(ShellRequest):
    """What ``LockManager.acquire`` returns: ``async with`` it, or ``held = await`` it."""

    __slots__ = ()
    manager: LockManager

    def __await__(self) -> Generator[Any, None, AsyncHeld]:
        # A generator that returns without yielding: an uncontended await never suspends.
        m = self.manager
        if m._orphans:
            m._reap()
        m._table.submit(self, m._clock())
        if self.state is GRANTED:
            if m._factories:
                m._guarded.enter(self)
                return m._new_held(self, _LooseAsyncHeld)
            held = _new(_LooseAsyncHeld)  # the class call without its slow path
            held._request = self
            return held
        return (yield from self._wait_slow(_LooseAsyncHeld).__await__())

    async def __aenter__(self) -> AsyncHeld:
        m = self.manager
        if m._orphans:
            m._reap()
        m._table.submit(self, m._clock())
        if self.state is GRANTED:
            if m._factories:
                m._guarded.enter(self)
                return m._new_held(self, AsyncHeld)
            held = _new(AsyncHeld)  # AsyncHeld(self) without the slow class call
            held._request = self
            return held
        return await self._wait_slow(AsyncHeld)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # LockManager._release_request, inlined: this is half of every acquire/release.
        if self.state is GRANTED:
            m = self.manager
            wake = m._table.release_lazy(self, m._clock)
            if wake or self.guards or m._orphans:
                m._after([r.waiter for r in wake], m._settle(wake, (self,)))

    async def _wait_slow(self, cls: type[AsyncHeld]) -> AsyncHeld:
        m = self.manager
        loop = asyncio.get_running_loop()
        m._loop = loop
        if m._orphans:  # orphaned while no loop was known: nobody scheduled their release
            loop.call_soon(m._reap)
        waiter = self.waiter = loop.create_future()
        timer = None
        if self.timeout is not None:
            timer = loop.call_later(self.timeout, m._time_out, self)
        try:
            if self.on_wait is not None:
                self.on_wait()
            await waiter
        except BaseException:
            m._abandon(self)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self.state is GRANTED:
            return m._new_held(self, cls)
        if self.state is CANCELLED and self.cancel_reason == "timed out":
            raise exceptions.LockTimeout(
                f"{list(self.keys)} not granted to {self.owner!r} within {self.timeout}s"
            )
        if self.state is CANCELLED:
            raise exceptions.LockCancelled(
                f"request of {self.owner!r} for {list(self.keys)} {self.cancel_reason}"
            )
        raise exceptions.LockCancelled(
            f"lock of {self.owner!r} on {list(self.keys)} was released before its waiter resumed"
        )


class LockManager(BaseLockManager[AsyncLockRequest]):
    """Shared/exclusive locks on named resources for asyncio tasks (SPEC §3).

    ``async with locks.acquire("vm/a", owner="task-1", timeout=5.0) as held: held.token("vm/a")``
    or ``held = await locks.acquire(...)`` … ``held.release()``. Use it from one event loop.
    """

    _request_class = AsyncLockRequest

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self._loop: asyncio.AbstractEventLoop | None = None

    # --- waiting and waking -------------------------------------------------------------------

    def _notify(self, waiters: list[object]) -> None:
        for waiter in waiters:
            if waiter is not None and not waiter.done():  # type: ignore[attr-defined]
                waiter.set_result(None)  # type: ignore[attr-defined]

    def _release_request(self, req: ShellRequest) -> None:
        # The loop serialises everything: no lock needed on this hot path.
        if req.state is not GRANTED:
            return
        wake = self._table.release_lazy(req, self._clock)
        if wake or req.guards or self._orphans:
            self._after([r.waiter for r in wake], self._settle(wake, (req,)))

    def _time_out(self, req: AsyncLockRequest) -> None:
        if req.state is WAITING:
            wake = self._table.cancel(req, self._clock(), reason="timed out")
            self._after([req.waiter, *(r.waiter for r in wake)], self._settle(wake))

    def _abandon(self, req: AsyncLockRequest) -> None:
        """The waiting task was cancelled: withdraw ``req``, or release it if the grant raced."""
        if req.state is WAITING:
            wake = self._table.cancel(req, self._clock(), reason="was cancelled")
            self._after([r.waiter for r in wake], self._settle(wake))
        else:
            self._release_request(req)

    async def _upgrade(self, req: AsyncLockRequest, timeout: float | None) -> None:
        if req.state is not GRANTED:
            raise _released(req)
        if self._table.upgrade(req, self._clock()):
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._orphans:
            loop.call_soon(self._reap)
        waiter = req.waiter = loop.create_future()
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            if req.upgrading:
                timed_out = True
                self._cancel_upgrade(req)
                waiter.set_result(None)

        timer = loop.call_later(timeout, expire) if timeout is not None else None
        try:
            await waiter
        except BaseException:
            if req.upgrading:
                self._cancel_upgrade(req)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if timed_out:
            raise exceptions.LockTimeout(
                f"upgrade of {list(req.keys)} for {req.owner!r} not granted within {timeout}s"
            )
        if req.state is not GRANTED:
            raise exceptions.LockCancelled(f"lock of {req.owner!r} was released while upgrading")

    def _cancel_upgrade(self, req: AsyncLockRequest) -> None:
        wake = self._table.cancel_upgrade(req, self._clock())
        self._after([r.waiter for r in wake], self._settle(wake))

    # --- garbage-collected locks --------------------------------------------------------------

    def _orphan(self, req: ShellRequest) -> None:
        # Called from __del__ (maybe inside a table operation): defer to the loop.
        self._orphans.append(req)
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._reap)
            except RuntimeError:
                pass  # loop closed: the next call on this manager reaps it
