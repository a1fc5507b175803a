"""The in-process event bus: ticket, VM and task changes as they happen, for the API's event
hub (:mod:`corral.api.stream`, behind ``GET /v1/events`` and the dashboard) and for tests.

Publishing never blocks and never awaits: each subscriber has a bounded queue, and a subscriber
that falls behind loses its oldest events and is told so (``Event.kind == "overflow"``) rather than
slowing the controller. This module must not know about the store, backends or the API.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from corral import exceptions
from corral.types import JSON

KINDS = frozenset({"ticket", "vm", "task", "overflow"})
"""The kinds of events the bus carries."""


@dataclass(frozen=True, slots=True)
class Event:
    """One change: ``kind`` (ticket, vm, task), the object's ``id``, its new ``state``."""

    kind: str
    id: str
    state: str
    at: float
    data: Mapping[str, JSON] = field(default_factory=dict)

    def to_json(self) -> dict[str, JSON]:
        """The event as a JSON object (what ``/v1/events`` sends)."""
        return {
            "kind": self.kind,
            "id": self.id,
            "state": self.state,
            "at": self.at,
            "data": dict(self.data),
        }


class Subscription:
    """An async iterator over the events published after :meth:`EventBus.subscribe`.

    Use it as ``async with bus.subscribe() as events: async for event in events: ...``; leaving
    the block (or :meth:`close`) unsubscribes.
    """

    def __init__(self, bus: EventBus, kinds: frozenset[str] | None, maxsize: int) -> None:
        self._bus = bus
        self._kinds = kinds
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(maxsize=maxsize)
        self._closed = False
        self.dropped = 0
        """Events lost because this subscriber fell behind."""

    def _offer(self, event: Event) -> None:
        if self._closed or (self._kinds is not None and event.kind not in self._kinds):
            return
        if self._queue.full():
            # drop the oldest to make room for an overflow marker and the new event
            while self._queue.qsize() > self._queue.maxsize - 2:
                self._queue.get_nowait()
                self.dropped += 1
            marker = Event("overflow", "", "dropped", event.at, {"dropped": self.dropped})
            self._queue.put_nowait(marker)
        self._queue.put_nowait(event)

    def close(self) -> None:
        """Stop receiving; a pending ``__anext__`` ends the iteration."""
        if self._closed:
            return
        self._closed = True
        self._bus._unsubscribe(self)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event

    async def get(self, timeout: float | None = None) -> Event:
        """The next event; ``TimeoutError`` after ``timeout`` seconds without one."""
        async with asyncio.timeout(timeout):
            return await self.__anext__()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus:
    """Fan-out of events to every subscriber, in publication order."""

    def __init__(self) -> None:
        self._subscribers: list[Subscription] = []

    def subscribe(
        self, kinds: Iterable[str] | None = None, *, maxsize: int = 10_000
    ) -> Subscription:
        """Receive every later event (of ``kinds`` only, if given)."""
        wanted = None if kinds is None else frozenset(kinds)
        if wanted is not None and not wanted <= KINDS:
            raise exceptions.InvalidInput(
                f"unknown event kinds {sorted(wanted - KINDS)} (known: {', '.join(sorted(KINDS))})"
            )
        if maxsize < 2:
            raise exceptions.InvalidInput("maxsize must be >= 2")
        sub = Subscription(self, wanted, maxsize)
        self._subscribers.append(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        if sub in self._subscribers:
            self._subscribers.remove(sub)

    @property
    def subscribers(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every subscriber now (never blocks)."""
        for sub in list(self._subscribers):
            sub._offer(event)
