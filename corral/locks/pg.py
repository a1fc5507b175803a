"""``PgLockManager``: the lock table of SPEC §3 in PostgreSQL, shared by every host (SPEC §8).

Same Python surface and semantics as :class:`corral.locks.LockManager` (strict FIFO
shared/exclusive, float timeouts, multi-key all-or-nothing in sorted order, upgrade/downgrade,
``AlreadyHeld``, ``release_all``, status) across processes and hosts. Every semantic lives in the
PL/pgSQL functions of migration 0007; this module only calls them and waits:

- one :class:`~corral.cluster.loopsql.LoopBatcher` runs the calls in order on the event loop
  (no thread), every call of one turn of the loop in one transaction (contenders share
  commits); a grant is always committed durably, so fencing tokens strictly increase per
  resource even across a PostgreSQL crash;
- one :class:`~corral.cluster.notify.Listener` thread LISTENs on this session's channel: a
  waiter is woken by the NOTIFY of the transaction that granted it, never by polling; it also
  heartbeats the host lease and reaps the requests of hosts whose lease lapsed;
- every request belongs to this host's session: when the host dies its locks are freed and its
  queued requests removed once its lease lapses.

``release()``/``downgrade()`` stay synchronous: they take effect locally at once and are sent
in order (a later ``status()`` or acquire of this manager sees them). ``status()``,
``release_all()``, ``last_token()`` and ``check_token()`` wait for one short query.
Guarded objects are per process and not offered here. Use one manager per event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Protocol, cast

import psycopg

from corral import exceptions
from corral.cluster import hosts
from corral.cluster.batcher import Command
from corral.cluster.loopsql import LoopBatcher
from corral.cluster.notify import STOP, LeaseLapsed, Listener
from corral.locks import keys as _keys
from corral.locks.base import Held, KeySpec, ShellRequest, _released
from corral.locks.keys import EXCLUSIVE, SHARED, Mode
from corral.locks.manager import AsyncHeld
from corral.locks.status import HolderStatus, ResourceStatus, WaiterStatus
from corral.locks.table import CANCELLED, GRANTED, NEW, RELEASED, WAITING

log = logging.getLogger(__name__)

_SEP = "\x1f"
_LETTER = {SHARED: "s", EXCLUSIVE: "x"}
_MODE = {"s": SHARED, "x": EXCLUSIVE}
_ERRORS: dict[str, type[exceptions.CorralError]] = {
    "held": exceptions.AlreadyHeld,
    "conflict": exceptions.UpgradeConflict,
    "released": exceptions.LockReleased,
    "notheld": exceptions.NotHeld,
    "lease": exceptions.LeaseLost,
}
_LEASE_LOST = "lost its host lease"

_ACQUIRE = "SELECT corral_lock_acquire(%s, %s, %s, %s, %s)"
# corral_lock_acquire whose own grant does not make the transaction wait for the WAL flush:
# the caller's next durable commit to the same server, later in the one WAL, covers it. A
# grant that another command of the same transaction made (a release handing a key to a
# waiter), before or after, still makes it durable. ``before`` is read first and the function
# runs once: OFFSET 0 keeps the planner from merging either subquery into the select list.
_ACQUIRE_COVERED = """
SELECT a.r,
       CASE WHEN s.before <> 'on' AND a.r LIKE 'g %%' THEN
         set_config('corral.granted', s.before, true)
         || set_config('synchronous_commit', 'off', true) END
  FROM (SELECT coalesce(current_setting('corral.granted', true), '') AS before OFFSET 0) s
 CROSS JOIN LATERAL (SELECT corral_lock_acquire(%s, %s, %s, %s, %s) AS r OFFSET 0) a
"""
_RELEASE = "SELECT corral_lock_release(%s, %s)"
_CANCEL = "SELECT corral_lock_cancel(%s)"
_UPGRADE = "SELECT corral_lock_upgrade(%s)"
_CANCEL_UPGRADE = "SELECT corral_lock_cancel_upgrade(%s)"
_DOWNGRADE = "SELECT corral_lock_downgrade(%s)"
_RELEASE_ALL = "SELECT corral_lock_release_all(%s)"
_REAP = "SELECT corral_lock_reap()"
_LAST_TOKEN = "SELECT coalesce((SELECT token FROM lock_resources WHERE key = %s), 0)"  # noqa: S105
# This session's requests, and its one-key grants made without a request row (migration 0018).
_MINE = """
SELECT id, state, corral_lock_tokens(id) FROM lock_requests WHERE session = %s
UNION ALL
SELECT g.request_id, 'granted', g.token::text || g.mode FROM lock_grants g
 WHERE split_part(g.request_id, '.', 1) = %s
   AND NOT EXISTS (SELECT 1 FROM lock_requests q WHERE q.id = g.request_id)
"""
_STATUS = """
SELECT 'h', g.key, g.owner, g.mode, g.since, g.token, g.seq FROM lock_grants g
UNION ALL
SELECT 'u', r.key, q.owner, 'x', q.upgrade_since, 0, 0
  FROM lock_resources r JOIN lock_requests q ON q.id = r.upgrader
UNION ALL
SELECT 'w', q.wait_key, q.owner, substr(q.modes, q.pos + 1, 1), q.since, 0, q.seq
  FROM lock_requests q WHERE q.wait_key IS NOT NULL
UNION ALL
SELECT 't', r.key, '', '', 0, r.token, 0 FROM lock_resources r
  WHERE EXISTS (SELECT 1 FROM lock_grants g WHERE g.key = r.key)
     OR EXISTS (SELECT 1 FROM lock_requests q WHERE q.wait_key = r.key)
"""


def _error(result: str) -> exceptions.CorralError:
    """The exception for an ``E <kind> <message>`` answer of a lock function."""
    _, kind, message = result.split(" ", 2)
    return _ERRORS[kind](message)


def _plain_url(url: str) -> str:
    """A libpq URL from corral's store URL spelling (``postgresql+psycopg://`` accepted)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    if not url.startswith("postgresql://"):
        raise exceptions.InvalidInput(f"PgLockManager needs a postgresql:// URL, got {url!r}")
    return url


class PgLockRequest(ShellRequest):
    """What ``PgLockManager.acquire`` returns: ``async with`` it, or ``held = await`` it."""

    __slots__ = ("durable", "ending", "rid", "upgrade_waiter")
    manager: Any
    durable: bool
    ending: str | None
    rid: str
    upgrade_waiter: asyncio.Future[None] | None

    def __await__(self) -> Generator[Any, None, AsyncHeld]:
        return self._enter(_LoosePgHeld).__await__()

    async def __aenter__(self) -> AsyncHeld:
        return await self._enter(AsyncHeld)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.manager._release_request(self)

    async def _enter(self, cls: type[AsyncHeld]) -> AsyncHeld:
        m: PgLockManager = self.manager
        if self.state is not NEW:
            raise exceptions.LockRequestProcessed(f"{self!r} was already submitted")
        loop = m._running_loop()
        self.state = WAITING
        self.grants = {}
        self.upgrading = 0
        self.upgrade_waiter = None
        self.ending = None
        self.since = loop.time()
        session = m._follow_session()
        self.rid = rid = f"{session}.{next(m._counter)}"
        m._requests[rid] = self
        waiter = self.waiter = loop.create_future()
        keys = _SEP.join(self.keys)
        modes = "".join(_LETTER[mode] for mode in self.modes)
        sql = _ACQUIRE if self.durable else _ACQUIRE_COVERED
        m._send(sql, (session, rid, self.owner, keys, modes), self, m._on_acquired)
        timer = None
        if self.timeout is not None:
            timer = loop.call_later(self.timeout, m._end_wait, self, "timed out")
        try:
            await waiter
        except BaseException:
            m._abandon(self)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if self.state is GRANTED:
            held = cls(cast(Any, self))
            return held
        if self.cancel_reason == "timed out":
            raise exceptions.LockTimeout(
                f"{list(self.keys)} not granted to {self.owner!r} within {self.timeout}s"
            )
        if self.cancel_reason == _LEASE_LOST:
            raise exceptions.LeaseLost(f"request of {self.owner!r}: this host {_LEASE_LOST}")
        raise exceptions.LockCancelled(
            f"request of {self.owner!r} for {list(self.keys)} {self.cancel_reason}"
        )


class _LoosePgHeld(AsyncHeld):
    # Returned by ``await``: no async with block will release it, so garbage collection must.
    __slots__ = ()

    def __del__(self) -> None:
        self._collected()


class HostSession(Protocol):
    """A host's membership kept by someone else (:class:`corral.cluster.service.Membership`):
    its session changes when it rejoins after a lapsed lease."""

    host_id: str
    session: str
    incarnation: int
    lease: float


class PgLockManager:
    """Shared/exclusive locks whose table lives in PostgreSQL (SPEC §3, §8).

    ``async with PgLockManager(url, host_id="h1") as locks: async with locks.acquire(...)``.
    ``covers_grants`` tells the task engine that ``acquire(..., durable=False)`` is offered.
    ``url`` is a migrated corral database; ``host_id`` must be unique per running process
    (registering an id again supersedes its previous incarnation). ``lease`` is how long this
    host may miss heartbeats before its locks are freed (default 15 s); ``heartbeat`` how often
    it renews its lease and frees the locks of hosts whose lease lapsed (default: a third of
    the lease, at most 1 s).
    With ``member`` (a :class:`HostSession`, e.g. ``corral serve``'s cluster membership), the
    manager registers nothing: its requests belong to the membership's session and lease, and
    when the membership rejoins as a new incarnation they end as after a lapsed lease.
    """

    covers_grants = True

    def __init__(
        self,
        url: str,
        *,
        host_id: str | None = None,
        lease: float = 15.0,
        heartbeat: float | None = None,
        address: str = "",
        version: str = "",
        config_hash: str = "",
        member: HostSession | None = None,
    ) -> None:
        self._url = _plain_url(url)
        if member is not None:
            host_id, lease = member.host_id, member.lease
        self.host_id = hosts.default_host_id() if host_id is None else host_id
        if not isinstance(self.host_id, str) or not 0 < len(self.host_id) <= 255:
            raise exceptions.InvalidInput(f"host_id must be 1-255 characters, got {host_id!r}")
        self.lease = hosts.validate_lease(lease)
        # Reaping rides on the heartbeat: a dead host's locks are freed within its lease plus
        # one interval of any live host, so the interval is short by default.
        self.heartbeat = (
            min(self.lease / 3.0, 1.0) if heartbeat is None else hosts.validate_lease(heartbeat)
        )
        if self.heartbeat >= self.lease:
            raise exceptions.InvalidInput(
                f"heartbeat ({self.heartbeat}s) must be shorter than the lease ({self.lease}s)"
            )
        self._meta = (address, version, config_hash)
        self.session = hosts.new_session()
        self._member = member
        if member is not None:
            # Attached: the membership registers, heartbeats and rejoins; this manager binds
            # its requests to the membership's session and only reaps dead hosts' requests.
            self.host_id = member.host_id
            self.session = member.session
        self.incarnation = 0
        self._counter = itertools.count(1)
        self._requests: dict[str, PgLockRequest] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._batcher: LoopBatcher | None = None
        self._listener: Listener | None = None
        self._orphans: list[ShellRequest] = []
        self._factories: dict[str, object] = {}

    # --- life ---------------------------------------------------------------------------------

    async def start(self) -> PgLockManager:
        """Register this host, connect the SQL batcher, start the LISTEN thread; wait until
        listening."""
        self._loop = asyncio.get_running_loop()
        if self._member is not None:
            self.session, self.incarnation = self._member.session, self._member.incarnation
        await asyncio.to_thread(self._register)
        try:
            batcher = LoopBatcher(self._url, name=f"corral-locks-{self.host_id}")
            self._batcher = await batcher.start()
        except psycopg.OperationalError as exc:
            raise exceptions.StoreError(f"lock manager cannot connect: {exc}") from exc
        # grants are notified on the batcher's own connection, read on the loop; after it
        # reconnects, the session's rows are read again (a NOTIFY sent meanwhile is lost)
        batcher.on_notify = self._on_notify
        batcher.on_reconnect = self._resync
        listened: asyncio.Future[None] = self._loop.create_future()
        batcher.listen(
            self._channel(self.session),
            lambda _r, e: listened.set_exception(e) if e else listened.set_result(None),
        )
        try:
            await asyncio.wait_for(listened, 30.0)
        except (psycopg.Error, TimeoutError) as exc:
            raise exceptions.StoreError(f"could not LISTEN for lock grants: {exc}") from exc
        # the thread heartbeats the lease and reaps; its channel only carries STOP
        self._listener = Listener(
            self._url,
            self._beat_channel(self.session),
            self.heartbeat,
            self._from_listener,
            self._beat,
            self._from_resync,
            self._relapse,
        )
        self._listener.start()
        listening = await asyncio.to_thread(self._listener.listening.wait, 30.0)
        if not listening:
            raise exceptions.StoreError("could not LISTEN for lock grants within 30 s")
        return self

    async def close(self) -> None:
        """Release everything this host holds, end its lease, stop the threads."""
        batcher, listener = self._batcher, self._listener
        if batcher is None or listener is None:
            return
        rids = list(self._requests)
        for req in list(self._requests.values()):
            self._fail(req, "was cancelled: the lock manager closed")
        listener.stop()
        if self._member is None:
            batcher.submit(Command(hosts._RESIGN, (self.session,)))
        else:  # the membership's lease goes on: give back what this manager holds or awaits
            for rid in rids:
                batcher.submit(Command(_RELEASE, (rid, None)))
                batcher.submit(Command(_CANCEL, (rid,)))
        batcher.submit(Command(_REAP, ()))
        batcher.submit(Command("SELECT pg_notify(%s, %s)", (listener.channel, STOP)))
        await batcher.aclose(70.0)
        await asyncio.to_thread(listener.join, 70.0)
        self._batcher = self._listener = None

    async def __aenter__(self) -> PgLockManager:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def _channel(session: str) -> str:
        return f"cl_{session}"

    @staticmethod
    def _beat_channel(session: str) -> str:
        return f"cb_{session}"

    def _follow_session(self) -> str:
        """On the loop: LISTEN on the current session's channel (it changes when the host
        rejoins after a lapsed lease), before any request of that session is sent; return
        that session."""
        session = self.session  # read once: the listener's thread may change it
        batcher = self._batcher
        channel = self._channel(session)
        if batcher is not None and batcher.channel != channel:
            batcher.listen(channel)
        return session

    def _register(self) -> None:
        with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as conn:
            if self._member is None:
                self.incarnation = hosts.register(
                    conn, self.host_id, self.session, self.lease, *self._meta
                )
            conn.execute(_REAP)

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None or self._batcher is None:
            raise exceptions.LockError("PgLockManager is not started (use 'async with' or start())")
        return self._loop

    # --- surface ------------------------------------------------------------------------------

    def acquire(
        self,
        *keys: KeySpec,
        mode: str | Mode = "exclusive",
        owner: str,
        timeout: float | None = None,
        on_wait: Callable[[], object] | None = None,
        durable: bool = True,
    ) -> PgLockRequest:
        """A request for ``keys``, as :meth:`corral.locks.LockManager.acquire` (same checks).

        ``durable=False``: a grant made at once commits without waiting for the WAL flush (no
        fsync of its own), and is lost in a server crash until a durable commit to the same
        PostgreSQL server follows it, which the caller promises to make before it acts on the
        grant (the task engine's recovery push). A grant made later, when the request had to
        queue, is always durable: it is made by another host's release.
        """
        key_t, modes = _keys.normalize_request(keys, mode)
        owner = _keys.validate_owner(owner)
        timeout = _keys.validate_timeout(timeout)
        if on_wait is not None and not callable(on_wait):
            raise exceptions.InvalidInput("on_wait must be a callable or None")
        if not isinstance(durable, bool):
            raise exceptions.InvalidInput(f"durable must be True or False, got {durable!r}")
        req = PgLockRequest(self, owner, key_t, modes, timeout, on_wait)  # type: ignore[arg-type]
        req.durable = durable
        return req

    def register_namespace(self, namespace: str, factory: object) -> None:
        """Not offered: guarded objects live in one process, these locks span hosts."""
        raise exceptions.InvalidInput(
            "guarded objects are per process; PgLockManager does not offer register_namespace"
        )

    def status(self) -> list[ResourceStatus]:
        """Every held or awaited resource of the cluster: mode, holders, queue (blocking)."""
        rows = self._call(_STATUS, (), rows=True)
        holders: dict[str, list[tuple[int, HolderStatus]]] = {}
        queues: dict[str, list[tuple[int, WaiterStatus]]] = {}
        tokens: dict[str, int] = {}
        for kind, key, owner, letter, since_text, token_text, seq_text in rows:
            since, token, seq = float(since_text), int(token_text), int(seq_text)
            if kind == "h":
                holders.setdefault(key, []).append(
                    (seq, HolderStatus(owner, _MODE[letter], since, token))
                )
            elif kind == "u":
                queues.setdefault(key, []).append((-1, WaiterStatus(owner, EXCLUSIVE, since, True)))
            elif kind == "w":
                queues.setdefault(key, []).append((seq, WaiterStatus(owner, _MODE[letter], since)))
            else:
                tokens[key] = token
        records = []
        for key in sorted(tokens):
            held = [h for _, h in sorted(holders.get(key, []), key=lambda p: p[0])]
            queue = [w for _, w in sorted(queues.get(key, []), key=lambda p: p[0])]
            mode = None
            if held:
                mode = EXCLUSIVE if any(h.mode is EXCLUSIVE for h in held) else SHARED
            records.append(ResourceStatus(key, mode, tuple(held), tuple(queue), tokens[key]))
        return records

    def last_token(self, key: str) -> int:
        """The newest fencing token issued for ``key`` on any host (0 if never granted)."""
        key = _keys.validate_key(key)
        return int(self._call(_LAST_TOKEN, (key,)))

    def check_token(self, key: str, token: int) -> None:
        """Raise ``StaleToken`` if a newer grant of ``key`` than ``token`` has been made."""
        latest = self.last_token(key)
        if type(token) is not int or token < latest:
            raise exceptions.StaleToken(
                f"token {token!r} for {key!r} is stale: the newest grant has token {latest}"
            )

    def release_all(self, owner: str) -> None:
        """Release everything ``owner`` holds and cancel everything it waits for, on any host."""
        owner = _keys.validate_owner(owner)
        self._call(_RELEASE_ALL, (owner,))
        for req in [r for r in self._requests.values() if r.owner == owner]:
            self._fail(req, "was cancelled by release_all")

    # --- talking to the threads ---------------------------------------------------------------

    def _call(self, sql: str, params: tuple[Any, ...], rows: bool = False) -> Any:
        self._running_loop()
        assert self._batcher is not None  # noqa: S101 - checked by _running_loop
        try:
            return self._batcher.call(sql, params, rows)
        except (psycopg.Error, TimeoutError) as exc:
            raise exceptions.StoreError(f"lock query failed: {exc}") from exc

    def _send(
        self,
        sql: str,
        params: tuple[Any, ...],
        req: object = None,
        then: Callable[[Any, Any, BaseException | None], None] | None = None,
        rows: bool = False,
    ) -> None:
        """Queue a call; ``then(req, result, error)`` runs on the loop when it is done."""
        batcher = self._batcher
        if batcher is None:
            return
        done = None
        if then is not None:

            def done(result: Any, error: BaseException | None) -> None:
                then(req, result, error)  # on the loop, when the batch's answer is read

        batcher.submit(Command(sql, params, done, rows))

    def _from_listener(self, payload: str) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._on_notify, payload)
            except RuntimeError:
                pass

    def _from_resync(self) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._resync)
            except RuntimeError:
                pass

    def _beat(self, conn: psycopg.Connection[Any]) -> None:
        """On the listener's thread: renew the lease (or, attached, notice that the membership
        rejoined under a new session), then free the locks of dead hosts."""
        member = self._member
        if member is not None:
            if member.session != self.session:
                raise LeaseLapsed(self.session)
        elif not hosts.heartbeat(conn, self.session):
            raise LeaseLapsed(self.session)
        conn.execute(_REAP)

    def _relapse(self, conn: psycopg.Connection[Any]) -> str:
        """On the listener's thread: the lease lapsed; join again as a new incarnation (or,
        attached, take the session the membership rejoined with)."""
        old = self.session
        member = self._member
        if member is None:
            session = hosts.new_session()
            self.incarnation = hosts.register(conn, self.host_id, session, self.lease, *self._meta)
        else:
            session, self.incarnation = member.session, member.incarnation
        self.session = session
        conn.execute(_REAP)
        log.warning(
            "host %s %s; rejoined as incarnation %d", self.host_id, _LEASE_LOST, self.incarnation
        )
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._lost, old)
        return self._beat_channel(session)

    # --- on the loop: results and notifications -----------------------------------------------

    def _grant(self, req: PgLockRequest, tokens: str) -> None:
        now = req.since
        grants = {}
        for key, item in zip(req.keys, tokens.split(), strict=False):
            grants[key] = (req, _MODE[item[-1]], now, int(item[:-1]), 0)
        req.grants = grants  # type: ignore[assignment]
        req.state = GRANTED
        waiter = req.waiter
        if isinstance(waiter, asyncio.Future) and not waiter.done():
            waiter.set_result(None)

    def _fail(self, req: PgLockRequest, reason: str) -> None:
        """Locally end ``req``: a waiting one is cancelled with ``reason``, a held one released."""
        self._requests.pop(req.rid, None)
        if req.state is WAITING:
            req.state = CANCELLED
            req.cancel_reason = reason
            waiter = req.waiter
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_result(None)
        elif req.state is GRANTED:
            req.state = RELEASED
            self._wake_upgrader(req)

    @staticmethod
    def _wake_upgrader(req: PgLockRequest) -> None:
        req.upgrading = 0
        fut = req.upgrade_waiter
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _on_acquired(self, req: PgLockRequest, result: Any, error: BaseException | None) -> None:
        if req.state is not WAITING:
            return  # granted by an earlier NOTIFY, or ended here meanwhile
        waiter = req.waiter
        if error is not None or result.startswith("E"):
            self._requests.pop(req.rid, None)
            req.state = CANCELLED
            req.cancel_reason = "failed"
            exc = (
                exceptions.StoreError(f"lock request failed: {error}")
                if error is not None
                else _error(result)
            )
            if isinstance(waiter, asyncio.Future) and not waiter.done():
                waiter.set_exception(exc)
        elif result.startswith("g"):
            self._grant(req, result[2:])
        elif req.on_wait is not None and req.ending is None:
            req.on_wait()

    def _on_notify(self, payload: str) -> None:
        rid, _, what = payload.partition(" ")
        req = self._requests.get(rid)
        if req is None:
            return
        kind = what[:1]
        if kind == "g" and req.state is WAITING:
            self._grant(req, what[2:])
        elif kind == "u" and req.state is GRANTED:
            self._set_tokens(req, what[2:])
            self._wake_upgrader(req)
        elif kind in "cr":
            self._fail(req, what[2:] or "was cancelled")

    def _set_tokens(self, req: PgLockRequest, tokens: str) -> None:
        items = tokens.split()
        if len(items) != len(req.grants):
            return  # a key was released meanwhile: the next message carries the rest
        for key, item in zip(req.grants, items, strict=True):
            old = req.grants[key]
            req.grants[key] = (req, _MODE[item[-1]], old[2], int(item[:-1]), 0)

    def _end_wait(self, req: PgLockRequest, reason: str) -> None:
        """A timeout: withdraw the request (a grant that raced it stands)."""
        if req.state is WAITING and req.ending is None:
            req.ending = reason
            self._send(_CANCEL, (req.rid,), req, self._on_cancelled)

    def _on_cancelled(self, req: PgLockRequest, result: Any, error: BaseException | None) -> None:
        if req.state is not WAITING:
            return
        if error is None and result.startswith("g"):
            self._grant(req, result[2:])
        else:
            self._fail(req, req.ending or "was cancelled")

    def _abandon(self, req: PgLockRequest) -> None:
        """The waiting task was cancelled: withdraw ``req``, or release it if the grant raced."""
        if req.state is WAITING:
            self._requests.pop(req.rid, None)
            req.state = CANCELLED
            req.cancel_reason = "was cancelled"
            self._send(_CANCEL, (req.rid,), req, self._release_if_granted)
        else:
            self._release_request(req)

    def _release_if_granted(
        self, req: PgLockRequest, result: Any, error: BaseException | None
    ) -> None:
        if error is None and result.startswith("g"):
            self._send(_RELEASE, (req.rid, None))

    def _resync(self) -> None:
        """After a reconnect of the listener: re-read what NOTIFYs may have been lost.

        The query runs after every call sent before it, so each local request it does not
        find was withdrawn (reaped, released elsewhere); a row this manager no longer knows is
        a release lost in a server crash, sent again.
        """
        known = dict(self._requests)
        self._send(_MINE, (self.session, self.session), known, self._on_mine, rows=True)

    def _on_mine(
        self, known: dict[str, PgLockRequest], rows: Any, error: BaseException | None
    ) -> None:
        if error is not None:
            log.warning("could not re-read lock state after a reconnect: %s", error)
            return
        found = {rid: (state, tokens) for rid, state, tokens in rows}
        for rid, (state, _tokens) in found.items():
            if rid not in self._requests:
                if state == "granted":
                    self._send(_RELEASE, (rid, None))
                else:
                    self._send(_CANCEL, (rid,))
        for rid, req in known.items():
            if self._requests.get(rid) is not req:
                continue
            row = found.get(rid)
            if row is None:
                self._fail(req, "was withdrawn while the connection was lost")
            elif row[0] == "granted" and req.state is WAITING:
                self._grant(req, row[1])
            elif row[0] == "granted" and req.upgrading and "s" not in row[1]:
                self._set_tokens(req, row[1])
                self._wake_upgrader(req)

    def _lost(self, old_session: str) -> None:
        self._follow_session()
        for req in [r for r in self._requests.values() if r.rid.startswith(old_session + ".")]:
            self._fail(req, _LEASE_LOST)

    # --- called by Held (synchronous) ---------------------------------------------------------

    def _release_request(self, req: ShellRequest) -> None:
        req = cast(PgLockRequest, req)
        if req.state is not GRANTED:
            return
        req.state = RELEASED
        self._requests.pop(req.rid, None)
        if req.upgrading:
            self._wake_upgrader(req)
        self._send(_RELEASE, (req.rid, None))

    def _release_key(self, req: ShellRequest, key: str) -> None:
        req = cast(PgLockRequest, req)
        key = _keys.validate_key(key)
        if req.state is not GRANTED or key not in req.grants:
            raise exceptions.NotHeld(f"this lock of {req.owner!r} does not hold {key!r}")
        del req.grants[key]
        if not req.grants:
            req.state = RELEASED
            self._requests.pop(req.rid, None)
        self._send(_RELEASE, (req.rid, key))

    def _downgrade(self, req: ShellRequest) -> None:
        req = cast(PgLockRequest, req)
        if req.state is not GRANTED:
            raise _released(req)
        if req.upgrading:
            raise exceptions.UpgradeConflict(f"{req!r} is being upgraded; cannot downgrade now")
        for key, grant in list(req.grants.items()):
            if grant[1] is EXCLUSIVE:
                req.grants[key] = (grant[0], SHARED, grant[2], grant[3], grant[4])
        self._send(_DOWNGRADE, (req.rid,))

    def _orphan(self, req: ShellRequest) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(self._release_request, req)
            except RuntimeError:
                pass

    async def _upgrade(self, req: PgLockRequest, timeout: float | None) -> None:
        if req.state is not GRANTED:
            raise _released(req)
        loop = self._running_loop()
        answer: asyncio.Future[Any] = loop.create_future()

        def settle(_r: object, result: Any, error: BaseException | None) -> None:
            if not answer.done():
                if error is not None:
                    answer.set_exception(exceptions.StoreError(f"upgrade failed: {error}"))
                else:
                    answer.set_result(result)

        self._send(_UPGRADE, (req.rid,), req, settle)
        result = await answer
        if req.state is not GRANTED:
            raise exceptions.LockCancelled(f"lock of {req.owner!r} was released while upgrading")
        if result.startswith("E"):
            raise _error(result)
        if result.startswith("g"):
            self._set_tokens(req, result[2:])
            return
        if all(g[1] is EXCLUSIVE for g in req.grants.values()):
            return  # the NOTIFY of the upgrade came first
        await self._wait_upgrade(req, timeout)

    async def _wait_upgrade(self, req: PgLockRequest, timeout: float | None) -> None:
        loop = self._running_loop()
        fut = req.upgrade_waiter = loop.create_future()
        req.upgrading = 1
        timed_out = False

        def withdrawn(_r: object, result: Any, error: BaseException | None) -> None:
            nonlocal timed_out
            if error is None and result.startswith("g"):
                self._set_tokens(req, result[2:])
            else:
                timed_out = True
                for key, grant in list(req.grants.items()):
                    req.grants[key] = (grant[0], SHARED, grant[2], grant[3], grant[4])
            self._wake_upgrader(req)

        def expire() -> None:
            if req.upgrading:
                self._send(_CANCEL_UPGRADE, (req.rid,), req, withdrawn)

        timer = loop.call_later(timeout, expire) if timeout is not None else None
        try:
            await fut
        except BaseException:
            if req.upgrading:
                self._send(_CANCEL_UPGRADE, (req.rid,), req, withdrawn)
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


__all__ = ["Held", "PgLockManager", "PgLockRequest"]
