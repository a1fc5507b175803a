"""Reading ``GET /v1/events``: a server-sent-events decoder and what a reconnect asks for.

:class:`Decoder` turns the stream's lines into :class:`ServerEvent` values (the SSE rules corral's
server uses: ``id``, ``event`` and ``data`` fields, comments ignored, a blank line ends an
event); :class:`Resume` remembers the last id seen so that a reconnect sends ``Last-Event-ID``
and the server replays what was missed (or sends ``resync``). Both clients
(:meth:`corral.client.Client.events`, :meth:`corral.client.AsyncClient.events`) use them. This
module must not do I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from corral import exceptions
from corral.types import JSON

PATH = "/v1/events"
"""The event stream's path."""

READ_TIMEOUT = 60.0
"""Seconds without a byte before a stream counts as dead (the server sends a comment to a stream
silent for 15 to 30 s)."""

RETRY = 1.0
"""Seconds between two reconnects (doubling up to :data:`MAX_RETRY` while they fail)."""

MAX_RETRY = 30.0

KINDS = ("ticket", "vm", "task", "pool")
"""The kinds a stream may be narrowed to."""

CONTROL = frozenset({"resync", "dropped"})
"""Events about the stream itself rather than about an object."""


@dataclass(frozen=True, slots=True)
class ServerEvent:
    """One event of the stream: its ``id`` (``None`` when it had none, or 0), its name
    (``ticket``, ``vm``, ``task``, ``pool``, ``resync``, ``dropped``) and its decoded JSON data
    (the raw text when it is not JSON)."""

    id: int | None
    event: str
    data: JSON

    def _field(self, key: str) -> JSON:
        return self.data.get(key) if isinstance(self.data, dict) else None

    @property
    def object_id(self) -> str | None:
        """The ticket id, VM name, task id or pool name the event is about."""
        value = self._field("id")
        return value if isinstance(value, str) else None

    @property
    def state(self) -> str | None:
        """The object's new state (a pool's ``ok``/``problem``)."""
        value = self._field("state")
        return value if isinstance(value, str) else None

    @property
    def pool(self) -> str | None:
        """The pool the event concerns, when it says."""
        if self.event == "pool":
            return self.object_id
        inner = self._field("data")
        value = inner.get("pool") if isinstance(inner, dict) else None
        return value if isinstance(value, str) else None

    @property
    def reason(self) -> str | None:
        """Why (a ``resync``, a ``dropped`` stream, a failed VM)."""
        value = self._field("reason")
        if value is None:
            inner = self._field("data")
            value = inner.get("reason") if isinstance(inner, dict) else None
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, JSON]:
        """The event as one JSON object: ``{"id", "event", "data"}``."""
        return {"id": self.id, "event": self.event, "data": self.data}


@dataclass(slots=True)
class Decoder:
    """Server-sent events from the lines of a stream (line endings already removed)."""

    _id: str = ""
    _event: str = ""
    _data: list[str] = field(default_factory=list)

    def feed(self, line: str) -> ServerEvent | None:
        """Take one line; the finished event when ``line`` is the blank line ending one."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "id":
            self._id = value
        elif name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # "retry" and unknown fields are ignored, as the SSE rules say

    def _dispatch(self) -> ServerEvent | None:
        if not self._data and not self._event:
            self._id = ""
            return None
        text = "\n".join(self._data)
        try:
            data: JSON = json.loads(text)
        except ValueError:
            data = text
        event_id = int(self._id) if self._id.isdigit() else None
        result = ServerEvent(event_id or None, self._event or "message", data)
        self._id, self._event, self._data = "", "", []
        return result


def body(content: bytes) -> JSON:
    """An error answer's JSON body (``None`` when it is not JSON)."""
    try:
        data: JSON = json.loads(content) if content else None
    except ValueError:
        return None
    return data


@dataclass(slots=True)
class Resume:
    """What the next connection of a stream asks for: the events after :attr:`last_id`."""

    last_id: int | None = None
    kinds: tuple[str, ...] | None = None
    failures: int = 0

    def __post_init__(self) -> None:
        if self.last_id is not None and (isinstance(self.last_id, bool) or self.last_id < 0):
            raise exceptions.InvalidInput(f"last_id must be an event id >= 0, not {self.last_id}")
        if self.kinds is not None:
            unknown = sorted(set(self.kinds) - set(KINDS))
            if unknown:
                raise exceptions.InvalidInput(
                    f"kinds: unknown {unknown} (known: {', '.join(KINDS)})"
                )

    def headers(self, base: Mapping[str, str]) -> dict[str, str]:
        """The headers of the next connection: ``base`` plus ``Last-Event-ID`` once an event
        was seen."""
        sent = {**base, "Accept": "text/event-stream"}
        if self.last_id is not None:
            sent["Last-Event-ID"] = str(self.last_id)
        return sent

    def params(self) -> dict[str, str]:
        """The query of the next connection."""
        return {} if self.kinds is None else {"kinds": ",".join(self.kinds)}

    def seen(self, event: ServerEvent) -> None:
        """Remember ``event``'s id (a stream's own ``dropped`` event has none)."""
        self.failures = 0
        if event.id is not None:
            self.last_id = event.id

    def backoff(self) -> float:
        """Seconds to wait before the next reconnect (after one more failure)."""
        self.failures += 1
        return min(RETRY * 2.0 ** (self.failures - 1), MAX_RETRY)
