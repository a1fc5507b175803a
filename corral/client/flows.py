"""The multi-request operations of the client as I/O-free state machines: acquire, wait, release.

A :class:`Flow` says which :class:`~corral.client.core.Call` to send next (``pending``); the client
sends it and reports the answer (``resume``) or the error (``fail``) until nothing is pending, then
reads ``value``. The sync and async clients drive the same flows, so the acquire logic, its
deadlines and its clean-up exist once (httpx's ``BaseClient`` pattern, STYLE.md 7).

:class:`Acquisition` is what makes ``acquire`` leak-free: it creates the ticket with a fresh
idempotency key, so whatever interrupts the create (cancellation, Ctrl-C, a timeout, a lost answer),
:meth:`Acquisition.release` can still find the ticket the server may have created, and close it.

This module must not do I/O: no sockets, no threads, no event loop; time comes from a ``clock``
passed in.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Generator
from typing import Generic, TypeVar, Unpack

from corral import exceptions
from corral.client import core, models

R = TypeVar("R")

log = logging.getLogger("corral.client")

Answer = models.Ticket | None
"""What the calls of a flow answer."""

Steps = Generator[core.Call[Answer], Answer, R]
"""A flow written as a generator: yields calls, receives their answers, returns the value."""

Clock = Callable[[], float]
"""Monotonic seconds."""


class Flow(Generic[R]):
    """One multi-request operation: the call to send next, then its value."""

    def __init__(self, steps: Steps[R]) -> None:
        self._steps = steps
        self._done = False
        self._value: R | None = None
        self.pending: core.Call[Answer] | None = None
        """The call to send now; ``None`` once the flow is over."""
        self._advance(lambda: next(steps))

    def _advance(self, step: Callable[[], core.Call[Answer]]) -> None:
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
    ticket: models.Ticket, deadline: float | None, timeout: float | None, clock: Clock
) -> Steps[models.Ticket]:
    while ticket.state == "waiting":
        if deadline is not None and clock() >= deadline:
            raise exceptions.TicketTimeout(
                f"ticket {ticket.id} was not assigned within {timeout:g} s"
            )
        ticket = _ticket((yield core.get_ticket(ticket.id, wait=_left(deadline, clock))))
    return core.assigned_or_raise(ticket)


def _deadline(timeout: float | None, clock: Clock) -> float | None:
    if timeout is not None and timeout < 0:
        raise exceptions.InvalidInput(f"timeout must be >= 0, got {timeout}")
    return None if timeout is None else clock() + timeout


def wait_for(ticket_id: str, timeout: float | None, clock: Clock) -> Flow[models.Ticket]:
    """Long-poll ``ticket_id`` until it holds a VM: :class:`TicketTimeout` after ``timeout``
    seconds, :class:`TicketClosed` if it ends without one."""
    deadline = _deadline(timeout, clock)
    core.get_ticket(ticket_id)  # a bad id is refused before the flow starts

    def steps() -> Steps[models.Ticket]:
        first = _ticket((yield core.get_ticket(ticket_id, wait=_left(deadline, clock))))
        return (yield from _until_assigned(first, deadline, timeout, clock))

    return Flow(steps())


def renew_failed(ticket_id: str, error: exceptions.CorralError) -> bool:
    """Log a failed renewal; True when renewing is pointless from now on (ticket gone or over)."""
    log.warning("cannot renew ticket %s: %s", ticket_id, error)
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
        **request: Unpack[core.TicketArgs],
    ) -> None:
        if timeout is not None and timeout < 0:
            raise exceptions.InvalidInput(f"timeout must be >= 0, got {timeout}")
        self.key = key or uuid.uuid4().hex
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
        try:
            ticket = _ticket((yield self._create(wait=_left(deadline, clock))))
        except exceptions.ServerUnreachable:
            raise  # the server may have created it: release() looks it up
        except exceptions.CorralError:
            self._maybe_created = False  # refused: nothing was created
            raise
        self.ticket = ticket
        self.ticket = yield from _until_assigned(ticket, deadline, self.timeout, clock)
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
                try:
                    ticket = _ticket((yield core.find_ticket(self.key, owner=self._owner)))
                except exceptions.NotFound:
                    return  # the create never reached the server (or it knows no keys)
            if ticket is not None:
                yield core.close_ticket(ticket.id)
        except (exceptions.TicketClosed, exceptions.TicketStateTransitionError):
            pass  # already closed, expired or failed: nothing left to give back
        except exceptions.CorralError as exc:
            if not quiet:
                raise
            log.warning("could not close the ticket of key %s: %s", self.key, exc)
