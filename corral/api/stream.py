"""The event stream behind ``GET /v1/events`` and the dashboard: ids, history, fan-out.

One :class:`EventHub` per app takes every change from the controller's
:class:`~corral.controller.events.EventBus`, gives it the next id, encodes it **once** as a
server-sent-events frame, keeps the last frames in a bounded history (for ``Last-Event-ID``) and
hands the bytes to each :class:`Listener` allowed to see it. Ids are integers that increase
strictly, also across restarts: each event's id is the wall clock in microseconds when it is
numbered, or one more than the previous id if that is larger (so a clock stepping back never
repeats an id within a process). A client's ``Last-Event-ID`` from before a restart is older than
anything this process numbered and gets a ``resync`` event instead of a silent gap.

Several hosts on one PostgreSQL (a cluster, :mod:`corral.cluster`): the ids come from the
cluster's one event log instead (:mod:`corral.cluster.eventlog`). The hub appends what its
controller publishes to the log (one insert per write tick) and forwards what it reads back from
the log, every host's events in id order, so every host streams the same events under the same
ids and ``Last-Event-ID`` from any host resumes on any other (from this hub's memory when it
still has the events, else from the table). A single host keeps the in-memory numbering.

Who sees what: an admin (or anyone on an open server) every event; a user token only the events
of its own tickets and ``pool`` events (VM counts per state and the queue of each pool).

A listener has a bounded buffer: one that falls behind is dropped with a reason (its stream ends
with a ``dropped`` event) and never slows the controller. This module must not decide anything
about tickets or VMs: it numbers, filters and forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from corral import exceptions
from corral.api.auth import Principal
from corral.api.facade import ControllerFacade
from corral.controller.events import Event, EventBus
from corral.pools.lifecycle import TicketState, VMState
from corral.store import parse as parse_store_url
from corral.types import JSON

if TYPE_CHECKING:  # psycopg is imported only in a cluster
    from corral.cluster.eventlog import EventLog, Row

log = logging.getLogger(__name__)
decisions = logging.getLogger("corral.decisions")

HISTORY = 10_000
"""Frames kept for clients that reconnect with ``Last-Event-ID``."""

BUFFER = 2_000
"""Frames one listener may have waiting before it is dropped."""

COALESCE = 0.025
"""Seconds between two write ticks: one timer for all listeners wakes those with frames waiting,
each writes what gathered in one chunk (an idle hub's first frame goes out at once)."""

KEEPALIVE = 15.0
"""Seconds between two rounds of keep-alive comments (sent to the streams silent since the
previous round: one hub timer, not one per stream)."""

KEEPALIVE_FRAME = b": keep-alive\n\n"

POOL_DELAY = 1.0
"""Seconds VM changes are gathered before each changed pool's counts are published."""

SAMPLE_PERIOD = 30.0
"""Seconds between two points of the ready/in-use/spawning chart of each pool."""

SERIES_SPAN = 3600.0
"""Seconds of chart the hub keeps per pool."""

OWNERS = 100_000
"""Ticket owners remembered (to filter ticket events without asking the store)."""

KINDS = frozenset({"ticket", "vm", "task", "pool"})
"""The kinds a client may ask for with ``?kinds=``."""

CATCH_UP_WAIT = 10.0
"""Seconds a client resuming from an id this host has not read yet waits for its log reader to
get there (another host numbered it a moment ago) before it is told to resync."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One encoded event and what decides who may see it."""

    id: int
    kind: str
    owner: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class Point:
    """One point of a pool's chart: when, and how many VMs were ready, in use and spawning."""

    at: float
    ready: int
    in_use: int
    spawning: int


@dataclass(frozen=True, slots=True)
class Shared:
    """Where the hosts of a cluster share their events: the PostgreSQL store, this host's name
    (kept in the rows), and how long the log keeps events (``history`` of the configuration)."""

    url: str
    origin: str
    history: float | None


def shared_log(controller: object) -> Shared | None:
    """The cluster event log of ``controller``: ``None`` unless its store is PostgreSQL with
    cluster hosts (a single host numbers its events in memory)."""
    cluster = getattr(controller, "cluster", None)
    store = getattr(controller, "store", None)
    url = getattr(store, "url", None)
    if cluster is None or not isinstance(url, str) or parse_store_url(url).kind != "postgresql":
        return None
    origin = str(getattr(getattr(cluster, "member", None), "key", "host"))
    history = getattr(getattr(controller, "config", None), "history", None)
    return Shared(url, origin, float(history) if isinstance(history, int | float) else None)


def dumps(payload: dict[str, JSON]) -> str:
    """The JSON text of an event's ``data`` line."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=True)


def encode(event_id: int, kind: str, payload: dict[str, JSON]) -> bytes:
    """The server-sent-events frame of one event (``id``, ``event`` and one ``data`` line)."""
    return encode_text(event_id, kind, dumps(payload))


def encode_text(event_id: int, kind: str, text: str) -> bytes:
    """The frame of one event whose payload is already JSON text."""
    return f"id: {event_id}\nevent: {kind}\ndata: {text}\n\n".encode()


def visible(frame: Frame, principal: Principal) -> bool:
    """True when ``principal`` may see ``frame``."""
    if principal.sees_all or frame.kind in ("pool", "resync"):
        return True
    return frame.kind == "ticket" and frame.owner == principal.owner


def parse_kinds(text: str | None) -> frozenset[str] | None:
    """The kinds of ``?kinds=ticket,vm`` (``None``: every kind); ``InvalidInput`` if unknown."""
    if text is None or not text.strip():
        return None
    wanted = frozenset(k.strip() for k in text.split(",") if k.strip())
    unknown = sorted(wanted - KINDS)
    if unknown:
        raise exceptions.InvalidInput(
            f"query field 'kinds': unknown kinds {unknown} (known: {', '.join(sorted(KINDS))})"
        )
    return wanted


def parse_last_id(text: str | None) -> int | None:
    """The id of a ``Last-Event-ID`` header (``InvalidInput`` when it is not a number)."""
    if text is None or not text.strip():
        return None
    value = text.strip()
    if not value.isdigit() or len(value) > 30:
        raise exceptions.InvalidInput(f"Last-Event-ID must be an event id (digits), not {value!r}")
    return int(value)


class Listener:
    """One client's view of the stream: a bounded buffer of frames it may see.

    The hub decides who gets a frame (:meth:`EventHub.emit`); a listener only queues the bytes
    and writes what has gathered when the hub's next write tick wakes it.
    """

    def __init__(
        self, hub: EventHub, principal: Principal, kinds: frozenset[str] | None, maxsize: int
    ) -> None:
        self._hub = hub
        self.principal = principal
        self.kinds = kinds
        """The kinds asked for (``None``: every kind)."""
        self._maxsize = maxsize
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self._due = False
        """True while this listener waits for the hub's next write tick."""
        self._quiet = False
        """Nothing written since the hub's last keep-alive round."""
        self.reason: str | None = None
        """Why the hub dropped this listener (``None`` while it is served)."""

    def wants(self, frame: Frame) -> bool:
        """True when this listener may see ``frame`` and asked for its kind."""
        if self.kinds is not None and frame.kind not in self.kinds and frame.kind != "resync":
            return False
        return visible(frame, self.principal)

    def offer(self, data: bytes) -> None:
        """Queue one frame (never blocks, no per-frame wake-up); a full buffer drops the
        listener."""
        if self.reason is not None:
            return
        if len(self._frames) >= self._maxsize:
            self.drop(f"too slow: {self._maxsize} events waiting to be sent")
            return
        self._frames.append(data)
        if not self._due:
            self._due = True
            self._hub._schedule(self)

    def drop(self, reason: str) -> None:
        """Stop serving this listener: its stream sends ``reason`` and ends."""
        if self.reason is None:
            self.reason = reason
            self._frames.clear()
            self._hub._forget(self)
            self._wake.set()

    async def frames(self) -> AsyncIterator[bytes]:
        """The frames as they come, what gathered between two write ticks in one chunk (the
        hub's keep-alive rounds add a comment to a silent stream)."""
        try:
            while True:
                if self.reason is not None:
                    yield encode(0, "dropped", {"reason": self.reason})
                    return
                if self._wake.is_set():
                    self._wake.clear()
                    if self._frames:
                        # everything waiting in one write: a busy server sends fewer, larger chunks
                        batch = b"".join(self._frames)
                        self._frames.clear()
                        self._quiet = False
                        yield batch
                    continue
                await self._wake.wait()
        finally:
            self._hub._forget(self)

    def close(self) -> None:
        """Stop serving this listener (the server is stopping)."""
        self.drop("the server is stopping")


class EventHub:
    """Numbers, remembers and fans out the controller's events (see the module docstring)."""

    def __init__(
        self,
        controller: ControllerFacade,
        bus: EventBus,
        *,
        history: int = HISTORY,
        buffer: int = BUFFER,
        keepalive: float = KEEPALIVE,
        coalesce: float = COALESCE,
        clock: Callable[[], float] = time.time,
        first_id: int | None = None,
        shared: Shared | None = None,
    ) -> None:
        self._controller = controller
        self._shared = shared
        self._log: EventLog | None = None
        """The cluster's event log (``shared`` given): ids come from it, not from the clock."""
        if shared is not None:
            from corral.cluster.eventlog import EventLog

            self._log = EventLog(
                shared.url,
                self._from_log,
                origin=shared.origin,
                coalesce=coalesce,
                history=shared.history,
            )
        self._log_ready = asyncio.Event()
        self._catching: dict[Listener, list[Frame]] = {}
        """Listeners resuming from the log's table, and the frames forwarded meanwhile."""
        self._bus = bus
        self._clock = clock
        self._next = int(clock() * 1_000_000) if first_id is None else first_id
        self._history: deque[Frame] = deque()
        self._history_size = history
        self._forgotten = self._next - 1
        """Every event up to this id may be missing from the history (numbered by an earlier
        process, trimmed, or lost to an overflow): a client that saw no later one resyncs."""
        self._buffer = buffer
        self._keepalive = keepalive
        self._coalesce = coalesce
        self._listeners: set[Listener] = set()
        self._everything: set[Listener] = set()
        """Listeners that see every event (admins, an open server)."""
        self._by_owner: dict[str, set[Listener]] = {}
        """Users' listeners by owner: a ticket event is offered to its owner's only."""
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._task_states: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._series: dict[str, deque[Point]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._flushing = False
        self._waiting: list[Listener] = []
        """Listeners with frames for the next write tick."""
        self._tick: asyncio.Handle | None = None
        self._last_tick = -coalesce
        self._started = False
        self.delivered = 0
        """Frames handed to listeners (one per listener per frame)."""

    # --- life --------------------------------------------------------------------------------

    def start(self) -> None:
        """Subscribe to the bus and start forwarding (idempotent; needs a running loop)."""
        if self._started:
            return
        self._started = True
        subscription = self._bus.subscribe(maxsize=50_000)
        self._run(self._pump(subscription))
        if self._log is not None:
            self._run(self._start_log(self._log))
        self._run(self._sampler())
        self._run(self._keepalives())

    def _run(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_on(self, stopping: asyncio.Event) -> None:
        """:meth:`close` once ``stopping`` is set (the server stops before the controller)."""

        async def watch() -> None:
            await stopping.wait()
            await self.close()

        self._run(watch())

    async def _start_log(self, event_log: EventLog) -> None:
        delay = 0.1
        while True:
            try:
                tail = await event_log.start()
                break
            except exceptions.StoreError as exc:
                log.warning("event stream: %s; retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self._next = tail + 1
        self._forgotten = tail
        self._log_ready.set()

    async def close(self) -> None:
        """Stop forwarding and end every listener's stream."""
        for listener in [*self._listeners, *self._catching]:
            listener.close()
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        # the hub's own tasks first (the log's start among them), then the log: a log closed
        # while its start still connects would otherwise be started after its close
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._log is not None:
            await self._log.close()

    @property
    def listeners(self) -> int:
        """How many streams are being served."""
        return len(self._listeners) + len(self._catching)

    @property
    def event_log(self) -> EventLog | None:
        """The cluster's event log (``None`` on a single host)."""
        return self._log

    @property
    def last_id(self) -> int:
        """The id of the latest event (one less than the next)."""
        return self._next - 1

    # --- listeners ---------------------------------------------------------------------------

    def listen(
        self,
        principal: Principal,
        *,
        last_id: int | None = None,
        kinds: Iterable[str] | None = None,
    ) -> Listener:
        """A new listener; with ``last_id``, first the missed frames it may see, or ``resync``."""
        self.start()
        listener = Listener(
            self, principal, None if kinds is None else frozenset(kinds), self._buffer
        )
        if last_id is not None and self._log is not None and not self._remembers(last_id):
            # older than this hub's memory, or not read here yet: from the log's table
            self._catching[listener] = []
            self._run(self._catch_up(listener, last_id))
            return listener
        if last_id is not None:
            missed = self._missed(last_id)
            if missed is None:
                reason = f"event {last_id} is no longer in the history: reload the state"
                listener.offer(encode(self._next - 1, "resync", {"reason": reason}))
            else:
                for frame in missed:
                    if listener.wants(frame):
                        listener.offer(frame.data)
        self._attach(listener)
        return listener

    def _attach(self, listener: Listener) -> None:
        """From now on, offer ``listener`` every new frame it may see."""
        self._listeners.add(listener)
        principal = listener.principal
        if principal.sees_all or principal.owner is None:
            self._everything.add(listener)
        else:
            self._by_owner.setdefault(principal.owner, set()).add(listener)

    def _remembers(self, last_id: int) -> bool:
        """Whether this hub's memory answers a resume from ``last_id`` (cluster mode)."""
        return self._log_ready.is_set() and self._forgotten <= last_id <= self._next - 1

    async def _catch_up(self, listener: Listener, after: int) -> None:
        """Resume ``listener`` after ``after`` from the log's table, then attach it: the rows up
        to what this hub forwarded, then the frames forwarded during the read, each id once."""
        assert self._log is not None  # noqa: S101 (only called in cluster mode)
        reason: str | None = None
        rows: list[Row] = []
        try:
            await self._log_ready.wait()
            span = await self._log.read_after(after, self._buffer + 1)
            rows = span.rows
            if span.last is None or after > span.last:
                reason = f"event {after} is not in the event log: reload the state"
            elif span.first is not None and span.first > after + 1:
                reason = f"event {after} is no longer in the history: reload the state"
            elif len(rows) > self._buffer:
                reason = f"more than {self._buffer} events since {after}: reload the state"
            else:
                # a client coming from a host ahead of this one: wait until this one read there
                async with asyncio.timeout(CATCH_UP_WAIT):
                    while self._next - 1 < after:
                        await asyncio.sleep(0.01)
        except (exceptions.CorralError, TimeoutError) as exc:
            reason = f"events after {after} could not be read ({exc}): reload the state"
        pending = self._catching.pop(listener, None)
        if pending is None or listener.reason is not None:
            return  # dropped or closed meanwhile
        seen = after
        if reason is not None:
            seen = self._next - 1
            listener.offer(encode(seen, "resync", {"reason": reason}))
        else:
            for row in rows:
                if row.id > self._next - 1:
                    break  # not forwarded here yet: it comes live, in order
                frame = self._frame(row)
                if listener.wants(frame):
                    listener.offer(frame.data)
                seen = row.id
        for frame in pending:
            if frame.id > seen and listener.wants(frame):
                listener.offer(frame.data)
        self._attach(listener)

    def _missed(self, last_id: int) -> list[Frame] | None:
        """Frames after ``last_id``, or ``None`` when some of them are no longer kept."""
        if last_id >= self._next - 1:
            return [] if last_id == self._next - 1 else None
        if last_id < self._forgotten:
            return None
        frames: list[Frame] = []
        for frame in reversed(self._history):  # ids have gaps (they follow the clock)
            if frame.id <= last_id:
                break
            frames.append(frame)
            if len(frames) > self._buffer:
                return None
        frames.reverse()
        return frames

    def _schedule(self, listener: Listener) -> None:
        """``listener`` has frames: wake it at the next write tick (one timer for all)."""
        self._waiting.append(listener)
        if self._tick is None:
            loop = asyncio.get_running_loop()
            delay = self._last_tick + self._coalesce - loop.time()
            if delay > 0:
                self._tick = loop.call_later(delay, self._write_tick)
            else:
                self._tick = loop.call_soon(self._write_tick)

    def _write_tick(self) -> None:
        self._tick = None
        self._last_tick = asyncio.get_running_loop().time()
        waiting, self._waiting = self._waiting, []
        for listener in waiting:
            listener._due = False
            listener._wake.set()

    async def _keepalives(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive)
            for listener in list(self._listeners):
                if listener._quiet:
                    listener.offer(KEEPALIVE_FRAME)
                listener._quiet = True

    def _forget(self, listener: Listener) -> None:
        self._catching.pop(listener, None)
        self._listeners.discard(listener)
        self._everything.discard(listener)
        owner = listener.principal.owner
        mine = self._by_owner.get(owner) if owner is not None else None
        if mine is not None:
            mine.discard(listener)
            if not mine:
                del self._by_owner[owner]  # type: ignore[arg-type]

    # --- events ------------------------------------------------------------------------------

    async def _pump(self, subscription: AsyncIterator[Event]) -> None:
        async for event in subscription:
            try:
                await self.handle(event)
            except Exception as exc:  # one bad event must not end the stream
                log.exception("event %s %s not forwarded: %r", event.kind, event.id, exc)

    async def handle(self, event: Event) -> None:
        """Number, log and forward one event of the bus."""
        if event.kind == "overflow":
            if self._log is None:  # in a cluster the log keeps what was numbered before
                self._history.clear()
                self._forgotten = self._next - 1
            self.emit("resync", {"reason": "the server fell behind and lost events"}, None)
            return
        owner = await self._owner(event) if event.kind == "ticket" else None
        payload = event.to_json()
        if owner is not None:
            payload["owner"] = owner
        if event.kind == "task":
            # a task publishes once per job in the same state, with nothing new to tell
            if self._task_states.get(event.id) == event.state:
                return
            self._task_states[event.id] = event.state
            if len(self._task_states) > OWNERS:
                self._task_states.pop(next(iter(self._task_states)))
        log_decision(event, owner)
        self.emit(event.kind, payload, owner)
        if event.kind in ("vm", "ticket"):
            pool = event.data.get("pool")
            self._mark(str(pool) if pool else None)

    def emit(self, kind: str, payload: dict[str, JSON], owner: str | None) -> Frame | None:
        """Give ``payload`` the next id, remember it and hand it to every listener that may see
        it (encoded once). In a cluster: append it to the log instead (``None``); it is
        forwarded when read back, numbered by the log."""
        if self._log is not None:
            self._log.append(kind, owner, dumps(payload))
            return None
        event_id = max(self._next, int(self._clock() * 1_000_000))
        self._next = event_id + 1
        frame = Frame(event_id, kind, owner, encode(event_id, kind, payload))
        self._publish(frame)
        return frame

    def _from_log(self, rows: list[Row]) -> None:
        """Forward rows read from the cluster's log (in id order, each once)."""
        for row in rows:
            self._next = row.id + 1
            self._publish(self._frame(row))

    @staticmethod
    def _frame(row: Row) -> Frame:
        return Frame(row.id, row.kind, row.owner, encode_text(row.id, row.kind, row.payload))

    def _publish(self, frame: Frame) -> None:
        """Remember ``frame`` and offer it to every listener that may see it."""
        kind = frame.kind
        self._history.append(frame)
        if len(self._history) > self._history_size:
            self._forgotten = self._history.popleft().id
        data = frame.data
        for listener in self._audience(frame):
            # who may see it was decided by the audience: only a ?kinds= filter is left to check
            if listener.kinds is None or kind in listener.kinds or kind == "resync":
                listener.offer(data)
                self.delivered += 1
        if self._catching:
            for pending in self._catching.values():
                pending.append(frame)

    def _audience(self, frame: Frame) -> list[Listener]:
        """The listeners that may see ``frame``, without asking each of them (hundreds of user
        streams must not cost a check per event each)."""
        if frame.kind in ("pool", "resync"):
            return list(self._listeners)
        if frame.kind == "ticket" and frame.owner in self._by_owner:
            return [*self._everything, *self._by_owner[frame.owner]]
        return list(self._everything)

    async def _owner(self, event: Event) -> str | None:
        owner = event.data.get("owner")
        if isinstance(owner, str):
            self._owners[event.id] = owner
            if len(self._owners) > OWNERS:
                self._owners.popitem(last=False)
            return owner
        known = self._owners.get(event.id)
        if known is not None:
            return known
        try:  # a ticket created before this process started
            ticket = await self._controller.get_ticket(event.id)
        except exceptions.CorralError:
            return None
        self._owners[event.id] = ticket.owner
        return ticket.owner

    # --- pool counts and the chart -----------------------------------------------------------

    def _mark(self, pool: str | None) -> None:
        if pool is None:
            self._dirty.update(self._series or ["*"])
        else:
            self._dirty.add(pool)
        if not self._flushing:
            self._flushing = True
            self._run(self._flush_later())

    async def _flush_later(self) -> None:
        try:
            await asyncio.sleep(POOL_DELAY)
        finally:
            self._flushing = False
        try:
            await self.flush_pools()
        except exceptions.CorralError as exc:  # the store closed under a stopping server
            log.warning("pool counts not published: %s", exc)

    async def flush_pools(self, *, every: bool = False) -> None:
        """Publish the counts of the changed pools (``every``: of all pools) as ``pool`` events."""
        dirty, self._dirty = self._dirty, set()
        for status in await self._controller.list_pools():
            changed = status.name in dirty or "*" in dirty
            if not every and not changed:
                continue
            vms = dict(status.vms)
            point = Point(
                self._clock(),
                vms.get(VMState.READY, 0),
                vms.get(VMState.IN_USE, 0),
                vms.get(VMState.SPAWNING, 0),
            )
            self._sample(status.name, point, force=every)
            if not changed and not self._publishes_counts(status.name):
                continue
            payload: dict[str, JSON] = {
                "kind": "pool",
                "id": status.name,
                "state": "problem" if status.problem else "ok",
                "at": point.at,
                "data": {
                    "vms": dict(vms),
                    TicketState.WAITING.value: status.waiting_tickets,
                    TicketState.ASSIGNED.value: status.assigned_tickets,
                    "problem": status.problem,
                },
            }
            self.emit("pool", payload, None)

    def _publishes_counts(self, pool: str) -> bool:
        """Whether this host publishes ``pool``'s periodic counts: always on a single host; in a
        cluster only the pool's leader does (one ``pool`` event per period, not one per host)."""
        if self._log is None:
            return True
        leads = getattr(self._controller, "leads", None)
        return not callable(leads) or bool(leads(pool))

    def _sample(self, pool: str, point: Point, *, force: bool) -> None:
        series = self._series.setdefault(pool, deque())
        if series and not force and point.at - series[-1].at < SAMPLE_PERIOD:
            series[-1] = point  # keep the latest counts of this period
        else:
            series.append(point)
        while series and point.at - series[0].at > SERIES_SPAN:
            series.popleft()

    def series(self, pool: str) -> list[Point]:
        """The chart points of ``pool`` over the last hour, oldest first."""
        return list(self._series.get(pool, ()))

    async def _sampler(self) -> None:
        while True:
            try:
                await self.flush_pools(every=True)
            except exceptions.CorralError as exc:
                log.warning("pool counts not sampled: %s", exc)
            await asyncio.sleep(SAMPLE_PERIOD)


def log_decision(event: Event, owner: str | None) -> None:
    """One log line per lifecycle change, with the ids an operator greps for."""
    if not decisions.isEnabledFor(logging.INFO):
        return
    fields = [f"{event.kind}={event.id}", f"state={event.state}"]
    for key in ("pool", "ticket", "vm", "verb", "tag", "reason"):
        value = event.data.get(key)
        if value is not None:
            fields.append(f"{key}={value}")
    if owner is not None:
        fields.append(f"owner={owner}")
    decisions.info(" ".join(fields))
