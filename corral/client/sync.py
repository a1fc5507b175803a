"""The blocking Python client: :class:`Client`, one thin I/O layer over :mod:`corral.client.core`.

Every method sends one :class:`~corral.client.core.Call` with httpx and returns its typed result;
server errors come back as the same :mod:`corral.exceptions` classes. :meth:`Client.acquire` is the
context manager CI jobs use: it waits for a VM, renews the lease from a background thread while the
block runs and closes the ticket on exit, also when the block raises.

This module must not describe requests or parse responses itself: that is the core's job, so the
sync and async clients cannot drift apart.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TypeVar

import httpx

from corral import exceptions
from corral.client import core, models

T = TypeVar("T")

log = logging.getLogger(__name__)


class Client:
    """A blocking client of a corral server.

    ``url`` defaults to ``http://127.0.0.1:8642``; ``token`` is the bearer token of the server's
    config. ``http`` lets tests and embedders pass their own :class:`httpx.Client` (its base URL and
    transport are used as given). Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str = core.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = http or httpx.Client(base_url=url, timeout=timeout)
        self._headers = core.headers(token)

    # --- plumbing ---------------------------------------------------------------------------

    def send(self, call: core.Call[T]) -> T:
        """Send one call and return its typed result (raises the server's CorralError)."""
        timeout = self.timeout + (call.read_timeout or 0.0)
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=dict(call.params),
                json=call.body,
                headers=self._headers,
                timeout=timeout,
            )
        except httpx.TimeoutException as exc:
            raise exceptions.ServerUnreachable(
                f"{self.url}: no answer within {timeout:g} s"
            ) from exc
        except httpx.HTTPError as exc:
            raise exceptions.ServerUnreachable(f"cannot reach corral at {self.url}: {exc}") from exc
        return core.parse(call, response.status_code, response.content)

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- tickets ----------------------------------------------------------------------------

    def create_ticket(
        self,
        *,
        pool: str | None = None,
        tags: Sequence[str] = (),
        owner: str | None = None,
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
        wait: float | None = None,
    ) -> models.Ticket:
        """Ask for one VM; with ``wait``, the answer comes once it is assigned (or after
        ``wait`` seconds), else at once with the ticket usually still waiting."""
        return self.send(
            core.create_ticket(
                pool=pool,
                tags=tags,
                owner=owner,
                sandbox=sandbox,
                priority=priority,
                ttl=ttl,
                wait=wait,
            )
        )

    def get_ticket(self, ticket_id: str, *, wait: float | None = None) -> models.Ticket:
        """One ticket; with ``wait``, long-poll up to that many seconds for its assignment."""
        return self.send(core.get_ticket(ticket_id, wait=wait))

    def wait_ticket(self, ticket_id: str, timeout: float | None = None) -> models.Ticket:
        """Block until the ticket is assigned; :class:`TicketTimeout` after ``timeout`` seconds.

        A ticket that ends without a VM (closed, expired, failed) raises :class:`TicketClosed`.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = core.MAX_WAIT_PER_REQUEST
            if deadline is not None:
                remaining = min(remaining, max(0.0, deadline - time.monotonic()))
            ticket = self.get_ticket(ticket_id, wait=remaining)
            if ticket.state != "waiting":
                return core.assigned_or_raise(ticket)
            if deadline is not None and time.monotonic() >= deadline:
                raise exceptions.TicketTimeout(
                    f"ticket {ticket_id} was not assigned within {timeout:g} s"
                )

    def renew_ticket(self, ticket_id: str) -> models.Ticket:
        """Extend the ticket's lease."""
        return self.send(core.renew_ticket(ticket_id))

    def close_ticket(self, ticket_id: str) -> models.Ticket:
        """Give the ticket's VM back, or cancel the ticket if it still waits."""
        return self.send(core.close_ticket(ticket_id))

    def list_tickets(
        self, *, owner: str | None = None, state: str | None = None
    ) -> list[models.Ticket]:
        """Tickets visible to this token, optionally filtered."""
        return self.send(core.list_tickets(owner=owner, state=state))

    @contextmanager
    def acquire(
        self,
        *,
        pool: str | None = None,
        tags: Sequence[str] = (),
        owner: str | None = None,
        sandbox: str | None = None,
        priority: int = 0,
        ttl: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[models.Ticket]:
        """Hold one VM for the ``with`` block: yields the assigned ticket (``.vm``, ``.address``).

        Waits at most ``timeout`` seconds (:class:`TicketTimeout`), renews the lease in the
        background while the block runs, and closes the ticket on exit, also on exceptions.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        first_wait = core.MAX_WAIT_PER_REQUEST if timeout is None else timeout
        ticket = self.create_ticket(
            pool=pool,
            tags=tags,
            owner=owner,
            sandbox=sandbox,
            priority=priority,
            ttl=ttl,
            wait=first_wait,
        )
        stop = threading.Event()
        renewer: threading.Thread | None = None
        try:
            if ticket.state == "waiting":
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ticket = self.wait_ticket(ticket.id, left)
            else:
                ticket = core.assigned_or_raise(ticket)
            renewer = threading.Thread(
                target=self._renew_loop,
                args=(ticket, stop),
                name=f"corral-renew-{ticket.id}",
                daemon=True,
            )
            renewer.start()
            yield ticket
        finally:
            stop.set()
            if renewer is not None:
                renewer.join()
            self._close_quietly(ticket.id)

    def _renew_loop(self, ticket: models.Ticket, stop: threading.Event) -> None:
        while not stop.wait(core.renew_interval(ticket, time.time())):
            try:
                ticket = self.renew_ticket(ticket.id)
            except exceptions.CorralError as exc:
                log.warning("cannot renew ticket %s: %s", ticket.id, exc)
                if isinstance(exc, exceptions.NotFound | exceptions.Conflict):
                    return

    def _close_quietly(self, ticket_id: str) -> None:
        try:
            self.close_ticket(ticket_id)
        except (exceptions.TicketClosed, exceptions.TicketStateTransitionError):
            pass  # already closed, expired or failed: nothing left to give back

    # --- pools, VMs, tasks, locks ------------------------------------------------------------

    def list_pools(self) -> list[models.PoolStatus]:
        """Every pool with its counts."""
        return self.send(core.list_pools())

    def get_pool(self, name: str) -> models.PoolStatus:
        """One pool."""
        return self.send(core.get_pool(name))

    def list_vms(self, *, pool: str | None = None, state: str | None = None) -> list[models.VM]:
        """VMs, optionally of one pool or in one state (admin)."""
        return self.send(core.list_vms(pool=pool, state=state))

    def get_vm(self, name: str) -> models.VM:
        """One VM (admin)."""
        return self.send(core.get_vm(name))

    def terminate_vm(self, name: str) -> models.VM:
        """Terminate a VM, even one still spawning (admin)."""
        return self.send(core.terminate_vm(name))

    def list_tasks(self, *, state: str | None = None, tag: str | None = None) -> list[models.Task]:
        """Tasks of the engine (admin)."""
        return self.send(core.list_tasks(state=state, tag=tag))

    def get_task(self, task_id: str) -> models.Task:
        """One task (admin)."""
        return self.send(core.get_task(task_id))

    def stop_task(self, task_id: str, *, force: bool = False) -> models.Task:
        """Stop a task (admin)."""
        return self.send(core.stop_task(task_id, force=force))

    def rollback_task(self, task_id: str) -> models.Task:
        """Roll back a done task (admin)."""
        return self.send(core.rollback_task(task_id))

    def clean_task(self, task_id: str) -> None:
        """Forget a done task (admin)."""
        self.send(core.clean_task(task_id))

    def list_locks(self) -> list[models.LockStatus]:
        """Every lock's holders and queue (admin)."""
        return self.send(core.list_locks())

    def health(self) -> models.Health:
        """The server's health."""
        return self.send(core.health())
