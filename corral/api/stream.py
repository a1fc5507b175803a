"""The event stream behind ``GET /v1/events`` and the dashboard: ids, history, fan-out.

One :class:`EventHub` per app takes every change from the controller's
:class:`~corral.controller.events.EventBus`, gives it the next id, encodes it **once** as a
server-sent-events frame, keeps the last frames in a bounded history (for ``Last-Event-ID``) and
hands the bytes to each :class:`Listener` allowed to see it. Ids are integers that increase
strictly, also across restarts (the first id of a process is the wall clock in microseconds), so
a client's ``Last-Event-ID`` from before a restart is older than the history and gets a
``resync`` event instead of a silent gap.

Who sees what: an admin (or anyone on an open server) every event; a user token only the events
of its own tickets and ``pool`` events (VM counts per state and the queue of each pool).

A listener has a bounded buffer: one that falls behind is dropped with a reason (its stream ends
with a ``dropped`` event) and never slows the controller. This module must not decide anything
about tickets or VMs: it numbers, filters and forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from corral import exceptions
from corral.api.auth import Principal
from corral.api.facade import ControllerFacade
from corral.controller.events import Event, EventBus
from corral.pools.lifecycle import TicketState, VMState
from corral.types import JSON

log = logging.getLogger(__name__)
decisions = logging.getLogger("corral.decisions")

HISTORY = 10_000
"""Frames kept for clients that reconnect with ``Last-Event-ID``."""

BUFFER = 2_000
"""Frames one listener may have waiting before it is dropped."""

POOL_DELAY = 0.2
"""Seconds VM changes are gathered before each changed pool's counts are published."""

SAMPLE_PERIOD = 30.0
"""Seconds between two points of the ready/in-use/spawning chart of each pool."""

SERIES_SPAN = 3600.0
"""Seconds of chart the hub keeps per pool."""

OWNERS = 100_000
"""Ticket owners remembered (to filter ticket events without asking the store)."""

KINDS = frozenset({"ticket", "vm", "task", "pool"})
"""The kinds a client may ask for with ``?kinds=``."""


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


def encode(event_id: int, kind: str, payload: dict[str, JSON]) -> bytes:
    """The server-sent-events frame of one event (``id``, ``event`` and one ``data`` line)."""
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=True)
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
    """One client's view of the stream: a bounded buffer of frames it may see."""

    def __init__(
        self, hub: EventHub, principal: Principal, kinds: frozenset[str] | None, maxsize: int
    ) -> None:
        self._hub = hub
        self.principal = principal
        self._kinds = kinds
        self._maxsize = maxsize
        self._frames: deque[bytes] = deque()
        self._wake = asyncio.Event()
        self.reason: str | None = None
        """Why the hub dropped this listener (``None`` while it is served)."""

    def wants(self, frame: Frame) -> bool:
        """True when this listener may see ``frame`` and asked for its kind."""
        if self._kinds is not None and frame.kind not in self._kinds and frame.kind != "resync":
            return False
        return visible(frame, self.principal)

    def offer(self, data: bytes) -> None:
        """Queue one frame (never blocks); a full buffer drops the listener."""
        if self.reason is not None:
            return
        if len(self._frames) >= self._maxsize:
            self.drop(f"too slow: {self._maxsize} events waiting to be sent")
            return
        self._frames.append(data)
        self._wake.set()

    def drop(self, reason: str) -> None:
        """Stop serving this listener: its stream sends ``reason`` and ends."""
        if self.reason is None:
            self.reason = reason
            self._frames.clear()
            self._hub._forget(self)
            self._wake.set()

    async def frames(self, *, keepalive: float = 15.0) -> AsyncIterator[bytes]:
        """The frames as they come; a comment every ``keepalive`` seconds of silence."""
        try:
            while True:
                if self._frames:
                    # everything waiting in one write: a busy server sends fewer, larger chunks
                    batch = b"".join(self._frames)
                    self._frames.clear()
                    yield batch
                if self.reason is not None:
                    yield encode(0, "dropped", {"reason": self.reason})
                    return
                self._wake.clear()
                try:
                    async with asyncio.timeout(keepalive):
                        await self._wake.wait()
                except TimeoutError:
                    yield b": keep-alive\n\n"
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
        clock: Callable[[], float] = time.time,
        first_id: int | None = None,
    ) -> None:
        self._controller = controller
        self._bus = bus
        self._clock = clock
        self._next = int(clock() * 1_000_000) if first_id is None else first_id
        self._history: deque[Frame] = deque(maxlen=history)
        self._buffer = buffer
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
        self._run(self._sampler())

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

    async def close(self) -> None:
        """Stop forwarding and end every listener's stream."""
        for listener in list(self._listeners):
            listener.close()
        others = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in others:
            task.cancel()
        for task in others:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    @property
    def listeners(self) -> int:
        """How many streams are being served."""
        return len(self._listeners)

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
        if last_id is not None:
            missed = self._missed(last_id)
            if missed is None:
                reason = f"event {last_id} is no longer in the history: reload the state"
                listener.offer(encode(self._next - 1, "resync", {"reason": reason}))
            else:
                for frame in missed:
                    if listener.wants(frame):
                        listener.offer(frame.data)
        self._listeners.add(listener)
        if principal.sees_all or principal.owner is None:
            self._everything.add(listener)
        else:
            self._by_owner.setdefault(principal.owner, set()).add(listener)
        return listener

    def _missed(self, last_id: int) -> list[Frame] | None:
        """Frames after ``last_id``, or ``None`` when some of them are no longer kept."""
        if last_id >= self._next - 1:
            return [] if last_id == self._next - 1 else None
        if not self._history or last_id < self._history[0].id - 1:
            return None
        start = last_id - self._history[0].id + 1
        frames = list(itertools.islice(self._history, start, None))
        return frames if len(frames) <= self._buffer else None

    def _forget(self, listener: Listener) -> None:
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
            self._history.clear()
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

    def emit(self, kind: str, payload: dict[str, JSON], owner: str | None) -> Frame:
        """Give ``payload`` the next id, remember it and hand it to every listener that may see
        it (encoded once)."""
        frame = Frame(self._next, kind, owner, encode(self._next, kind, payload))
        self._next += 1
        self._history.append(frame)
        for listener in self._audience(frame):
            if listener.wants(frame):
                listener.offer(frame.data)
                self.delivered += 1
        return frame

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
            if not every and status.name not in dirty and "*" not in dirty:
                continue
            vms = dict(status.vms)
            point = Point(
                self._clock(),
                vms.get(VMState.READY, 0),
                vms.get(VMState.IN_USE, 0),
                vms.get(VMState.SPAWNING, 0),
            )
            self._sample(status.name, point, force=every)
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
