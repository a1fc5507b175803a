"""The multi-request operations of the client as I/O-free state machines: acquire, wait, release.

A :class:`Flow` says which :class:`~corral.client.core.Call` to send next (``pending``); the client
sends it and reports the answer (``resume``) or the error (``fail``) until nothing is pending, then
reads ``value``. A flow may also ask the client to :class:`Pause` (sleep) before its next call:
that is how it backs off while the server restarts. The sync and async clients drive the same
flows, so the acquire logic, its deadlines and its clean-up exist once (httpx's ``BaseClient``
pattern, STYLE.md 7).

:class:`Acquisition` is what makes ``acquire`` leak-free: it creates the ticket with a fresh
idempotency key, so whatever interrupts the create (cancellation, Ctrl-C, a timeout, a lost answer),
:meth:`Acquisition.release` can still find the ticket the server may have created, and close it.
The key lives in the server's store, so this holds across a server restart too: while the server is
unreachable or stopping, the flows back off and retry the same create (same key), the same
long-poll (same ticket) or the same release, for up to ``reconnect`` seconds of pauses.

This module must not do I/O: no sockets, no threads, no event loop; time comes from a ``clock``
passed in.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Generic, NamedTuple, TypeVar, Unpack

from corral import exceptions
from corral.client import core, models
from corral.client.records import TicketState

if TYPE_CHECKING:
    import logging

R = TypeVar("R")


def _log() -> logging.Logger:
    """The client's logger; :mod:`logging` is imported when there is something to say (a
    retry, a failed renewal or release), not by every program that imports the client."""
    import logging

    return logging.getLogger("corral.client")


Answer = models.Ticket | None
"""What the calls of a flow answer (a :class:`Pause` is answered with ``None``)."""


class Pause(NamedTuple):
    """Sleep ``seconds`` before the next call (then ``resume(None)``)."""

    seconds: float


Step = core.Call[Answer] | Pause
"""What a flow asks its client to do next."""

Steps = Generator[Step, Answer, R]
"""A flow written as a generator: yields calls, receives their answers, returns the value."""

Clock = Callable[[], float]
"""Monotonic seconds."""

RETRYABLE = (exceptions.ServerUnreachable, exceptions.ServerStopping, exceptions.StoreError)
"""Failures that say "not now" rather than "no": the request is repeated after a pause."""

RECONNECT_FOR = 300.0
"""Seconds of pauses a flow spends retrying one call before it gives up (a server restart)."""

FIRST_PAUSE = 0.25
"""The first pause after a retryable failure; each next one doubles, up to :data:`MAX_PAUSE`."""

MAX_PAUSE = 5.0
"""The longest pause between two attempts."""


def _with_retries(call: Callable[[], core.Call[Answer]], budget: float) -> Steps[Answer]:
    """Send ``call()`` until it succeeds; after a retryable failure pause (exponential backoff)
    and send it again, as long as the pauses add up to at most ``budget`` seconds."""
    pause, paused = FIRST_PAUSE, 0.0
    while True:
        try:
            return (yield call())
        except RETRYABLE as exc:
            if paused + pause > budget:
                raise
            _log().info("%s; retrying in %.2g s", exc, pause)
        yield Pause(pause)
        paused += pause
        pause = min(pause * 2, MAX_PAUSE)


class Flow(Generic[R]):
    """One multi-request operation: the call to send next, then its value."""

    def __init__(self, steps: Steps[R]) -> None:
        self._steps = steps
        self._done = False
        self._value: R | None = None
        self.pending: Step | None = None
        """The call to send (or the pause to make) now; ``None`` once the flow is over."""
        self._advance(lambda: next(steps))

    def _advance(self, step: Callable[[], Step]) -> None:
        self.pending = None
        try:
            self.pending = step()
        except StopIteration as stop:
            self._done, self._value = True, stop.value

    def resume(self, answer: Answer) -> None:
        """Report the answer of ``pending``."""
        self._advance(lambda: self._steps.send(answer))

    def fail(self, error: exceptions.CorralError) -> None:
        """Report that ``pending`` failed; raises it again unless the flow handles it."""
        self._advance(lambda: self._steps.throw(error))

    @property
    def value(self) -> R:
        """The outcome, once nothing is pending."""
        if not self._done:
            raise exceptions.CorralError("the flow is not over: a call is still pending")
        return self._value  # type: ignore[return-value]  # R itself may include None


def _ticket(answer: Answer) -> models.Ticket:
    if answer is None:  # only find_ticket's answer may be empty, and flows handle that
        raise exceptions.CorralError("the server answered no ticket")
    return answer


def _left(deadline: float | None, clock: Clock) -> float:
    if deadline is None:
        return core.MAX_WAIT_PER_REQUEST
    return max(0.0, deadline - clock())


def _until_assigned(
    ticket: models.Ticket,
    deadline: float | None,
    timeout: float | None,
    clock: Clock,
    reconnect: float = RECONNECT_FOR,
    *,
    asked: bool = True,
) -> Steps[models.Ticket]:
    """Long-poll until the ticket leaves ``waiting`` (``asked``: its state is fresh from the
    server, so the deadline may end the wait before the next question)."""
    ticket_id = ticket.id
    while ticket.state == TicketState.WAITING:
        if asked and deadline is not None and clock() >= deadline:
            raise exceptions.TicketTimeout(
                f"ticket {ticket_id} was not assigned within {timeout:g} s"
            )

        def poll() -> core.Call[Answer]:
            return core.get_ticket(ticket_id, wait=_left(deadline, clock))

        ticket = _ticket((yield from _with_retries(poll, reconnect)))
        asked = True
    return core.assigned_or_raise(ticket)


def _deadline(timeout: float | None, clock: Clock) -> float | None:
    if timeout is not None and timeout < 0:
        raise exceptions.InvalidInput(f"timeout must be >= 0, got {timeout}")
    return None if timeout is None else clock() + timeout


def wait_for(
    ticket_id: str, timeout: float | None, clock: Clock, *, reconnect: float = RECONNECT_FOR
) -> Flow[models.Ticket]:
    """Long-poll ``ticket_id`` until it holds a VM: :class:`TicketTimeout` after ``timeout``
    seconds, :class:`TicketClosed` if it ends without one. While the server is unreachable or
    stopping, the long-poll is retried with backoff (up to ``reconnect`` seconds of pauses)."""
    deadline = _deadline(timeout, clock)
    core.get_ticket(ticket_id)  # a bad id is refused before the flow starts
    waiting = models.Ticket(id=ticket_id, owner="", state=TicketState.WAITING.value)
    return Flow(_until_assigned(waiting, deadline, timeout, clock, reconnect, asked=False))


def renew_failed(ticket_id: str, error: exceptions.CorralError) -> bool:
    """Log a failed renewal; True when renewing is pointless from now on (ticket gone or over)."""
    _log().warning("cannot renew ticket %s: %s", ticket_id, error)
    return isinstance(error, exceptions.NotFound | exceptions.Conflict)


class Acquisition:
    """One ``acquire``: create a ticket, wait until it holds a VM; later, give it back.

    The ticket is created with the idempotency key ``key`` (a fresh UUID by default), so
    :meth:`release` closes it even when the create's answer never arrived.
    """

    def __init__(
        self,
        *,
        timeout: float | None = None,
        key: str | None = None,
        reconnect: float = RECONNECT_FOR,
        **request: Unpack[core.TicketArgs],
    ) -> None:
        if timeout is not None and timeout < 0:
            raise exceptions.InvalidInput(f"timeout must be >= 0, got {timeout}")
        if not reconnect >= 0:
            raise exceptions.InvalidInput(f"reconnect must be >= 0, got {reconnect}")
        self.reconnect = reconnect
        """Seconds of pauses spent retrying one call while the server is away."""
        self.key = key or os.urandom(16).hex()  # as uuid4().hex, without importing uuid
        """The idempotency key of the create."""
        self.timeout = timeout
        self.ticket: models.Ticket | None = None
        """The ticket, once the server's answer to the create arrived."""
        self._create = functools.partial(core.create_ticket, key=self.key, **request)
        self._owner = request.get("owner")
        self._create()  # bad arguments are refused before anything is sent
        self._maybe_created = False

    def obtain(self, clock: Clock) -> Flow[models.Ticket]:
        """Create the ticket and long-poll in the same request, then until it is assigned."""
        deadline = _deadline(self.timeout, clock)
        return Flow(self._obtain(deadline, clock))

    def _obtain(self, deadline: float | None, clock: Clock) -> Steps[models.Ticket]:
        self._maybe_created = True

        def create() -> core.Call[Answer]:
            # the same key every time: a create the server already took returns its ticket
            return self._create(wait=_left(deadline, clock))

        try:
            ticket = _ticket((yield from _with_retries(create, self.reconnect)))
        except RETRYABLE:
            raise  # the server may have created it: release() looks it up
        except exceptions.CorralError:
            self._maybe_created = False  # refused: nothing was created
            raise
        self.ticket = ticket
        self.ticket = yield from _until_assigned(
            ticket, deadline, self.timeout, clock, self.reconnect
        )
        return self.ticket

    def release(self, *, quiet: bool = False) -> Flow[None]:
        """Close the ticket (a waiting one is cancelled), found by its key if its id is unknown.

        ``quiet`` logs failures instead of raising them: for use while another exception (or a
        cancellation) unwinds, which must not be replaced.
        """
        return Flow(self._release(quiet))

    def _release(self, quiet: bool) -> Steps[None]:
        try:
            ticket = self.ticket
            if ticket is None and self._maybe_created:

                def find() -> core.Call[Answer]:
                    return core.find_ticket(self.key, owner=self._owner)

                try:
                    ticket = _ticket((yield from _with_retries(find, self.reconnect)))
                except exceptions.NotFound:
                    return  # the create never reached the server (or it knows no keys)
            if ticket is not None:
                ticket_id = ticket.id
                yield from _with_retries(lambda: core.close_ticket(ticket_id), self.reconnect)
        except (exceptions.TicketClosed, exceptions.TicketStateTransitionError):
            pass  # already closed, expired or failed: nothing left to give back
        except exceptions.CorralError as exc:
            if not quiet:
                raise
            _log().warning("could not close the ticket of key %s: %s", self.key, exc)
