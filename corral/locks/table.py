"""The pure lock table: every lock semantic of SPEC §3 for one process, as plain data.

Shared/exclusive modes, strict FIFO per resource, timeouts and cancellation that re-evaluate the
queue at once, owners (``AlreadyHeld``, ``release_all``), multi-key all-or-nothing acquire in
sorted order, upgrade/downgrade with ``UpgradeConflict``, fencing tokens and status records.

Every operation takes ``now`` and returns its decision as data: the requests whose waiters the
caller must wake (granted, upgraded, cancelled or released under them). The asyncio and thread
managers are thin shells around this class.

This module must not import asyncio, threading or time, must not call user code and must not
block: it is called inside the managers' critical sections.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from typing import Final

from corral import exceptions
from corral.locks.keys import EXCLUSIVE, SHARED, Mode
from corral.locks.status import HolderStatus, ResourceStatus, WaiterStatus


class RequestState(enum.StrEnum):
    """Where a request is in its life."""

    NEW = "new"
    WAITING = "waiting"
    GRANTED = "granted"
    CANCELLED = "cancelled"
    RELEASED = "released"


NEW = RequestState.NEW
WAITING = RequestState.WAITING
GRANTED = RequestState.GRANTED
CANCELLED = RequestState.CANCELLED
RELEASED = RequestState.RELEASED

_NOTHING: Sequence[Request] = ()


# A grant is a plain tuple (request, mode, since, token, seq): it is made on every acquisition,
# and a tuple costs a fraction of an object. ``seq`` is the arrival order of the request at the
# key; an upgrade keeps the seq of the shared grant it replaces.
Grant = tuple["Request", Mode, float, int, int]
G_REQUEST: Final = 0
G_MODE: Final = 1
G_SINCE: Final = 2
G_TOKEN: Final = 3
G_SEQ: Final = 4


class Request:
    """A request for one or more keys by one owner (the shells subclass it).

    ``keys`` are sorted and unique, ``modes`` parallel to them. The table fills in the rest when
    the request is submitted.
    """

    __slots__ = (
        "cancel_reason",
        "grants",
        "keys",
        "modes",
        "owner",
        "pos",
        "seq",
        "since",
        "state",
        "timeout",
        "upgrade_keys",
        "upgrading",
        "waiter",
    )

    # Declared for the type checker; set by submit(), upgrade() and cancel(). ``pos``, ``seq``,
    # ``since`` (and ``deadline``) are only meaningful while the request waits.
    pos: int  # index of the key being acquired (keys are taken one by one, in order)
    seq: int  # arrival order at keys[pos]
    since: float  # waiting since (submission, or the start of an upgrade)
    grants: dict[str, Grant]
    upgrading: int  # keys still waiting to become exclusive in an upgrade
    upgrade_keys: tuple[str, ...]
    cancel_reason: str

    def __init__(
        self,
        owner: str,
        keys: tuple[str, ...],
        modes: tuple[Mode, ...],
        timeout: float | None = None,
    ) -> None:
        self.owner = owner
        self.keys = keys
        self.modes = modes
        self.timeout = timeout
        self.state = NEW
        self.waiter: object = None  # the shell's: what to wake; the table never touches it

    @property
    def deadline(self) -> float | None:
        """When a waiting request times out (``None``: never). Computed, not stored: the
        contended path (every hand-over) pays one store less."""
        timeout = self.timeout
        return None if timeout is None else self.since + timeout

    def __repr__(self) -> str:
        return f"<lock request {self.owner!r} {list(self.keys)} {self.state}>"


class _Resource:
    """One key's holders and queue. Kept while idle (cheap re-acquisition) until pruned."""

    __slots__ = ("holders", "key", "mode", "queue", "token", "upgrader")

    def __init__(self, key: str, token: int) -> None:
        self.key = key
        self.token = token  # the newest fencing token issued for the key
        self.mode: Mode | None = None  # meaningful only while there are holders
        self.holders: dict[str, Grant] = {}
        self.queue: deque[Request] | None = None
        self.upgrader: Request | None = None


_PRUNE_AT = 4096


class LockTable:
    """All lock state of one process. Not thread-safe: the shells serialise calls."""

    def __init__(self) -> None:
        self._resources: dict[str, _Resource] = {}
        self._tokens: dict[str, int] = {}  # tokens of pruned resources: tokens never go back
        self._waiting: dict[Request, None] = {}  # an ordered set, oldest first
        self._pending: dict[str, list[Request]] = {}  # waiting requests by owner
        self._seq = 0
        self._prune_at = _PRUNE_AT

    # --- acquire ----------------------------------------------------------------------------

    def submit(self, req: Request, now: float) -> None:
        """Enter ``req``: grant what can be granted now, queue the rest (``req.state`` says which).

        Raises ``AlreadyHeld`` if the owner holds or waits for one of the keys, and
        ``LockRequestProcessed`` if ``req`` was submitted before; nothing changes then.
        """
        if req.state is not NEW:
            raise exceptions.LockRequestProcessed(f"{req!r} was already submitted")
        owner = req.owner
        keys = req.keys
        if len(keys) == 1 and owner not in self._pending:
            res = self._resources.get(keys[0])
            if res is None:
                return self._submit(req, now)
            holders = res.holders
            if owner in holders:
                return self._submit(req, now)  # raises AlreadyHeld
            mode = req.modes[0]
            if not res.queue and (
                not holders or (mode is SHARED and res.mode is SHARED and res.upgrader is None)
            ):
                # Fast path: one key, free (or shared and joined in shared), nobody queued, the
                # owner waits for nothing. Grant inline.
                seq = self._seq = self._seq + 1
                token = res.token = res.token + 1
                res.mode = mode
                holders[owner] = grant = (req, mode, now, token, seq)
                req.grants = {keys[0]: grant}
                req.upgrading = 0
                req.state = GRANTED
                return None
            if holders:
                # Second fast path: one busy key: join its queue (the contended case).
                seq = self._seq = self._seq + 1
                req.seq = seq
                req.since = now
                req.state = WAITING
                req.pos = 0
                req.grants = {}
                req.upgrading = 0
                if res.queue is None:
                    res.queue = deque()
                res.queue.append(req)
                self._waiting[req] = None
                self._pending[owner] = [req]
                return None
        return self._submit(req, now)

    def _submit(self, req: Request, now: float) -> None:
        """The general case of ``submit``: several keys, or any check the fast paths skip."""
        owner = req.owner
        resources = self._resources
        for key in req.keys:
            res = resources.get(key)
            if res is not None and owner in res.holders:
                raise exceptions.AlreadyHeld(f"owner {owner!r} already holds {key!r}")
        pending = self._pending.get(owner)
        if pending:
            for other in pending:
                for key in req.keys:
                    if key in other.keys:
                        raise exceptions.AlreadyHeld(f"owner {owner!r} already waits for {key!r}")
        req.since = now
        req.state = WAITING
        req.pos = 0
        req.grants = {}
        req.upgrading = 0
        if not self._advance(req, now):
            self._waiting[req] = None
            if pending is None:
                self._pending[owner] = [req]
            else:
                pending.append(req)

    def _advance(self, req: Request, now: float) -> bool:
        """Take req's keys from ``req.pos`` on until one must queue; True once all are granted."""
        resources = self._resources
        keys = req.keys
        while True:
            key = keys[req.pos]
            mode = req.modes[req.pos]
            self._seq += 1
            req.seq = self._seq
            res = resources.get(key)
            if res is None:
                res = self._new_resource(key)
            elif res.queue or (
                res.holders
                and (res.upgrader is not None or mode is EXCLUSIVE or res.mode is EXCLUSIVE)
            ):
                if res.queue is None:
                    res.queue = deque()
                res.queue.append(req)
                return False
            res.token += 1
            grant = (req, mode, now, res.token, req.seq)
            res.holders[req.owner] = grant
            res.mode = mode
            req.grants[key] = grant
            req.pos += 1
            if req.pos == len(keys):
                req.state = GRANTED
                return True

    def _new_resource(self, key: str) -> _Resource:
        resources = self._resources
        if len(resources) >= self._prune_at:
            for idle in [r for r in resources.values() if not r.holders and not r.queue]:
                self._tokens[idle.key] = idle.token
                del resources[idle.key]
            self._prune_at = max(_PRUNE_AT, 2 * len(resources))
        res = resources[key] = _Resource(key, self._tokens.pop(key, 0))
        return res

    def _dispatch(self, res: _Resource, now: float, wake: list[Request]) -> None:
        """Grant what the head of ``res``'s queue (or a pending upgrade) allows."""
        holders = res.holders
        up = res.upgrader
        if up is not None:
            if len(holders) == 1:
                old = holders[up.owner]
                res.token += 1
                holders[up.owner] = up.grants[res.key] = (up, EXCLUSIVE, old[2], res.token, old[4])
                res.mode = EXCLUSIVE
                res.upgrader = None
                up.upgrading -= 1
                if up.upgrading == 0:
                    wake.append(up)
            return
        queue = res.queue
        while queue:
            head = queue[0]
            mode = head.modes[head.pos]
            if holders and (mode is EXCLUSIVE or res.mode is EXCLUSIVE):
                return
            queue.popleft()
            res.token += 1
            grant = (head, mode, now, res.token, head.seq)
            holders[head.owner] = grant
            res.mode = mode
            head.grants[res.key] = grant
            head.pos += 1
            if head.pos == len(head.keys) or self._advance(head, now):
                head.state = GRANTED
                del self._waiting[head]  # _unwait(head), inlined: this is every hand-over
                pending = self._pending.pop(head.owner)
                if len(pending) != 1:  # the owner waits for other keys too: keep those
                    pending.remove(head)
                    self._pending[head.owner] = pending
                wake.append(head)
            if mode is EXCLUSIVE:
                return  # an exclusive grant admits nobody behind it: no second look at the head

    def _unwait(self, req: Request) -> None:
        del self._waiting[req]
        pending = self._pending[req.owner]
        pending.remove(req)
        if not pending:
            del self._pending[req.owner]

    # --- release and cancel ------------------------------------------------------------------

    def release(self, req: Request, now: float) -> Sequence[Request]:
        """Release every key ``req`` holds; returns the requests to wake. ``NotHeld`` if none."""
        return self.release_lazy(req, lambda: now)

    def release_lazy(self, req: Request, clock: Callable[[], float]) -> Sequence[Request]:
        """``release``, calling ``clock()`` for ``now`` only if a waiter may be granted.

        The shells' path: an uncontended release (nobody queued) reads no clock at all.
        """
        if req.state is not GRANTED:
            raise exceptions.NotHeld(f"{req!r} is not held")
        req.state = RELEASED
        if req.upgrading:
            wake: list[Request] = [req]  # its upgrader must learn the lock is gone
            self._drop_upgrade(req)
        elif len(req.keys) == 1:
            # Fast path: one key (a granted one-key request holds it), usually nobody behind.
            res = self._resources[req.keys[0]]
            del res.holders[req.owner]
            if res.queue or res.upgrader is not None:
                wake = []
                self._dispatch(res, clock(), wake)
                return wake
            return _NOTHING
        else:
            wake = []
        self._release_grants(req, clock(), wake)
        return wake

    def _release_grants(self, req: Request, now: float, wake: list[Request]) -> None:
        resources = self._resources
        for key in req.grants:
            res = resources[key]
            del res.holders[req.owner]
            self._dispatch(res, now, wake)

    def release_key(self, owner: str, key: str, now: float) -> Sequence[Request]:
        """Release one key of a granted request of ``owner``; ``NotHeld`` if it does not hold it."""
        res = self._resources.get(key)
        grant = res.holders.get(owner) if res is not None else None
        if res is None or grant is None or grant[G_REQUEST].state is not GRANTED:
            raise exceptions.NotHeld(f"owner {owner!r} does not hold {key!r}")
        req = grant[G_REQUEST]
        wake: list[Request] = []
        if res.upgrader is req:
            res.upgrader = None
            req.upgrading -= 1
            if req.upgrading == 0:
                wake.append(req)
        del req.grants[key]
        if not req.grants:
            req.state = RELEASED
        del res.holders[owner]
        self._dispatch(res, now, wake)
        return wake

    def cancel(self, req: Request, now: float, reason: str = "cancelled") -> Sequence[Request]:
        """Withdraw a waiting request and release what it got so far (all-or-nothing).

        The queues it leaves are re-evaluated at once. ``LockRequestProcessed`` if ``req`` is
        not waiting (a request cannot be granted or cancelled twice).
        """
        if req.state is not WAITING:
            raise exceptions.LockRequestProcessed(f"{req!r} is not waiting; it cannot be cancelled")
        req.state = CANCELLED
        req.cancel_reason = reason
        self._unwait(req)
        res = self._resources[req.keys[req.pos]]
        if res.queue is not None:
            res.queue.remove(req)
        wake: list[Request] = []
        self._release_grants(req, now, wake)
        self._dispatch(res, now, wake)
        return wake

    def expire(self, now: float) -> tuple[list[Request], list[Request]]:
        """Cancel every waiting request whose deadline has passed: ``(timed_out, to_wake)``."""
        due = [r for r in self._waiting if r.deadline is not None and r.deadline <= now]
        timed_out: list[Request] = []
        wake: list[Request] = []
        for req in due:
            if req.state is WAITING:  # an earlier cancellation may have let it in
                timed_out.append(req)
                wake.extend(self.cancel(req, now, reason="timed out"))
        return timed_out, [r for r in wake if r.state is GRANTED]

    def release_all(self, owner: str, now: float) -> tuple[list[Request], list[Request]]:
        """Cancel everything ``owner`` waits for and release everything it holds.

        Returns ``(affected, to_wake)``: the owner's requests that were cancelled or released,
        and the other requests granted as a result.
        """
        affected: list[Request] = []
        wake: list[Request] = []
        for req in list(self._pending.get(owner, ())):
            affected.append(req)
            wake.extend(self.cancel(req, now, reason="was cancelled by release_all"))
        held: dict[Request, None] = {}
        for res in self._resources.values():
            grant = res.holders.get(owner)
            if grant is not None:
                held[grant[G_REQUEST]] = None
        for req in held:
            affected.append(req)
            wake.extend(r for r in self.release(req, now) if r is not req)
        return affected, wake

    # --- upgrade and downgrade ---------------------------------------------------------------

    def upgrade(self, req: Request, now: float) -> bool:
        """Ask for every shared key of ``req`` to become exclusive; True if done at once.

        Granted per key when ``req`` is its sole holder, ahead of the queue (the queue waits for
        the upgrader's own shared hold, so it could never go first). If another holder is
        already upgrading one of the keys, ``UpgradeConflict`` at once and nothing changes.
        """
        if req.state is not GRANTED:
            raise exceptions.NotHeld(f"{req!r} is not held; it cannot be upgraded")
        if req.upgrading:
            raise exceptions.UpgradeConflict(f"{req!r} is already being upgraded")
        shared = tuple(key for key, grant in req.grants.items() if grant[G_MODE] is SHARED)
        if not shared:
            return True
        resources = self._resources
        for key in shared:
            other = resources[key].upgrader
            if other is not None:
                raise exceptions.UpgradeConflict(
                    f"owner {other.owner!r} is already upgrading {key!r}; "
                    f"{req.owner!r} upgrading too would deadlock"
                )
        req.upgrade_keys = shared
        req.upgrading = len(shared)
        req.since = now
        wake: list[Request] = []
        for key in shared:
            res = resources[key]
            res.upgrader = req
            self._dispatch(res, now, wake)
        return req.upgrading == 0

    def cancel_upgrade(self, req: Request, now: float) -> Sequence[Request]:
        """Withdraw a pending upgrade: keys already upgraded go back to shared (all-or-nothing)."""
        if not req.upgrading:
            raise exceptions.LockRequestProcessed(f"{req!r} has no upgrade pending")
        self._drop_upgrade(req)
        wake: list[Request] = []
        for key in req.upgrade_keys:
            if key in req.grants:
                self._set_shared(req, key, now, wake)
        return wake

    def _drop_upgrade(self, req: Request) -> None:
        req.upgrading = 0
        for key in req.upgrade_keys:
            res = self._resources.get(key)
            if res is not None and res.upgrader is req:
                res.upgrader = None

    def _set_shared(self, req: Request, key: str, now: float, wake: list[Request]) -> None:
        res = self._resources[key]
        old = req.grants[key]
        req.grants[key] = res.holders[req.owner] = (req, SHARED, old[2], old[3], old[4])
        res.mode = SHARED
        self._dispatch(res, now, wake)

    def downgrade(self, req: Request, now: float) -> Sequence[Request]:
        """Turn every exclusive key of ``req`` into shared; shared waiters at the head enter."""
        if req.state is not GRANTED:
            raise exceptions.NotHeld(f"{req!r} is not held; it cannot be downgraded")
        if req.upgrading:
            raise exceptions.UpgradeConflict(f"{req!r} is being upgraded; cannot downgrade now")
        wake: list[Request] = []
        for key in [k for k, grant in req.grants.items() if grant[G_MODE] is EXCLUSIVE]:
            self._set_shared(req, key, now, wake)
        return wake

    # --- reading ----------------------------------------------------------------------------

    def last_token(self, key: str) -> int:
        """The newest fencing token issued for ``key`` (0 if it was never granted)."""
        res = self._resources.get(key)
        return res.token if res is not None else self._tokens.get(key, 0)

    def holds(self, owner: str, key: str) -> bool:
        """Whether ``owner`` currently holds ``key`` (in any mode)."""
        res = self._resources.get(key)
        return res is not None and owner in res.holders

    def status(self) -> list[ResourceStatus]:
        """One record per resource that is held or waited for, sorted by key."""
        records = []
        for key in sorted(self._resources):
            res = self._resources[key]
            if not res.holders and not res.queue:
                continue
            holders = tuple(
                HolderStatus(g[G_REQUEST].owner, g[G_MODE], g[G_SINCE], g[G_TOKEN])
                for g in sorted(res.holders.values(), key=lambda g: g[G_SEQ])
            )
            queue: list[WaiterStatus] = []
            if res.upgrader is not None:
                up = res.upgrader
                queue.append(WaiterStatus(up.owner, EXCLUSIVE, up.since, upgrade=True))
            for req in res.queue or ():
                queue.append(WaiterStatus(req.owner, req.modes[req.pos], req.since))
            records.append(
                ResourceStatus(
                    key=key,
                    mode=res.mode if res.holders else None,
                    holders=holders,
                    queue=tuple(queue),
                    token=res.token,
                )
            )
        return records

    def grants_of(self, key: str) -> list[Grant]:
        """The grants on ``key`` in arrival order (for checks and tests)."""
        res = self._resources.get(key)
        return sorted(res.holders.values(), key=lambda g: g[G_SEQ]) if res is not None else []

    def queue_of(self, key: str) -> list[Request]:
        """The requests queued on ``key``, head first (a pending upgrade is not included)."""
        res = self._resources.get(key)
        return list(res.queue or ()) if res is not None else []

    def keys(self) -> list[str]:
        """Every key the table currently knows (held, queued, or idle and not yet pruned)."""
        return list(self._resources)

    def waiting(self) -> list[Request]:
        """Every waiting request, oldest first."""
        return list(self._waiting)
