"""The blocking Python client: :class:`Client`, one thin I/O layer over :mod:`corral.client.core`.

Every method sends one :class:`~corral.client.core.Call` with httpx (or, when given one, the
standard library's :class:`~corral.client.plainhttp.PlainHTTP`) and returns its typed result;
server errors come back as the same :mod:`corral.exceptions` classes. :meth:`Client.acquire` is the
context manager CI jobs use: it waits for a VM, renews the lease from a background thread while the
block runs and closes the ticket on exit, also when the block raises.

This module must not describe requests or parse responses itself: that is the core's job, so the
sync and async clients cannot drift apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar, Unpack

from corral import exceptions
from corral.client import core, flows, httpxload, models, plainhttp
from corral.types import JSON

if TYPE_CHECKING:
    import httpx

    from corral.client import sse

T = TypeVar("T")


class Client:
    """A blocking client of a corral server.

    ``url`` defaults to ``http://127.0.0.1:8642``; ``token`` is the bearer token of the server's
    config. A plain ``http://`` URL with no proxy in the environment is sent to through the
    standard library (:class:`~corral.client.plainhttp.PlainHTTP`, one kept-alive connection
    per thread), sparing the program the import of httpx; any other URL (TLS, a proxy,
    credentials in it) through httpx. ``http`` lets tests and embedders pass their own
    :class:`httpx.Client` (its base URL and transport are used as given) or ``PlainHTTP``; the
    event stream always opens an httpx client of its own unless given one. Use it as a context
    manager, or call :meth:`close`.
    """

    def __init__(
        self,
        url: str = core.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        http: httpx.Client | plainhttp.PlainHTTP | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        if http is None:
            http = plainhttp.PlainHTTP(url) if plainhttp.usable(url) else self._httpx_client()
        self._http = http
        self._streaming: httpx.Client | None = None
        self._headers = core.headers(token)

    # --- plumbing ---------------------------------------------------------------------------

    def send(self, call: core.Call[T]) -> T:
        """Send one call and return its typed result (raises the server's CorralError)."""
        request = core.request(call, self._headers, self.timeout)
        with core.transport_errors(self.url, request["timeout"]):
            response = self._http.request(**request)
        return core.parse(call, response.status_code, response.content)

    def run(self, flow: flows.Flow[T]) -> T:
        """Drive a multi-request flow of :mod:`corral.client.flows` to its end."""
        while (call := flow.pending) is not None:
            if isinstance(call, flows.Pause):
                time.sleep(call.seconds)
                flow.resume(None)
                continue
            try:
                answer = self.send(call)
            except exceptions.CorralError as exc:
                flow.fail(exc)
            else:
                flow.resume(answer)
        return flow.value

    def _httpx_client(self) -> httpx.Client:
        module = httpxload.load()
        client: httpx.Client = module.Client(
            base_url=self.url, timeout=self.timeout, verify=core.verify(self.url)
        )
        return client

    def _stream_client(self) -> httpx.Client:
        """The httpx client that opens the event stream (the given one, unless it is a
        :class:`~corral.client.plainhttp.PlainHTTP`, which cannot stream)."""
        if not isinstance(self._http, plainhttp.PlainHTTP):
            return self._http
        if self._streaming is None:
            self._streaming = self._httpx_client()
        return self._streaming

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
        if self._streaming is not None:
            self._streaming.close()

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
        self, *, wait: float | None = None, **request: Unpack[core.TicketArgs]
    ) -> models.Ticket:
        """Ask for one VM (``pool=`` or ``tags=``, see :class:`~corral.client.core.TicketArgs`);
        with ``wait``, the answer comes once it is assigned (or after ``wait`` seconds), else at
        once with the ticket usually still waiting."""
        return self.send(core.create_ticket(wait=wait, **request))

    def get_ticket(self, ticket_id: str, *, wait: float | None = None) -> models.Ticket:
        """One ticket; with ``wait``, long-poll up to that many seconds for its assignment."""
        return self.send(core.get_ticket(ticket_id, wait=wait))

    def wait_ticket(self, ticket_id: str, timeout: float | None = None) -> models.Ticket:
        """Block until the ticket is assigned; :class:`TicketTimeout` after ``timeout`` seconds.

        A ticket that ends without a VM (closed, expired, failed) raises :class:`TicketClosed`.
        """
        return self.run(flows.wait_for(ticket_id, timeout, time.monotonic))

    def renew_ticket(self, ticket_id: str) -> models.Ticket:
        """Extend the ticket's lease."""
        return self.send(core.renew_ticket(ticket_id))

    def close_ticket(self, ticket_id: str) -> models.Ticket:
        """Give the ticket's VM back, or cancel the ticket if it still waits."""
        return self.send(core.close_ticket(ticket_id))

    def list_tickets(
        self,
        *,
        owner: str | None = None,
        state: str | Sequence[str] | None = None,
        meta: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[models.Ticket]:
        """Tickets visible to this token, optionally filtered (see :func:`core.list_tickets`)."""
        return self.send(core.list_tickets(owner=owner, state=state, meta=meta, limit=limit))

    @contextmanager
    def acquire(
        self, *, timeout: float | None = None, **request: Unpack[core.TicketArgs]
    ) -> Iterator[models.Ticket]:
        """Hold one VM for the ``with`` block: yields the assigned ticket (``.vm``, ``.address``).

        Takes the ticket request of :class:`~corral.client.core.TicketArgs` (``pool=`` or
        ``tags=``, ``sandbox=``, ...). With ``count=N`` the ticket holds N VMs of one pool,
        assigned together (``.vms``, ``.addresses``) and released together on exit;
        ``exclusive=True`` asks for whole VMs on a pool whose VMs have several slots. Waits at
        most ``timeout`` seconds (:class:`TicketTimeout`), renews the lease in the background
        while the block runs, and closes the ticket on exit, also on exceptions, and also when
        interrupted (Ctrl-C) before the server's answer came: the ticket is then found by the
        idempotency key it was created with.
        """
        acquisition = flows.Acquisition(timeout=timeout, **request)
        try:
            ticket = self.run(acquisition.obtain(time.monotonic))
            with self._renewing(ticket):
                yield ticket
        except BaseException:
            # Also on Ctrl-C before the answer came: the acquisition finds its ticket by key.
            self.run(acquisition.release(quiet=True))
            raise
        self.run(acquisition.release())

    @contextmanager
    def _renewing(self, ticket: models.Ticket) -> Iterator[None]:
        stop = threading.Event()

        def renew(ticket: models.Ticket = ticket) -> None:
            while not stop.wait(core.renew_interval(ticket, time.time())):
                try:
                    ticket = self.renew_ticket(ticket.id)
                except exceptions.CorralError as exc:
                    if flows.renew_failed(ticket.id, exc):
                        return

        renewer = threading.Thread(target=renew, name=f"corral-renew-{ticket.id}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join()

    # --- operators' controls ----------------------------------------------------------------

    def pause_pool(self, name: str) -> models.PoolMode:
        """Stop preallocating a pool (admin)."""
        return self.send(core.pause_pool(name))

    def resume_pool(self, name: str) -> models.PoolMode:
        """Undo a pause or a drain (admin)."""
        return self.send(core.resume_pool(name))

    def drain_pool(self, name: str, *, dry_run: bool = False) -> models.DrainResult:
        """Drain a pool; with ``dry_run``, only say which idle VMs would go (admin)."""
        return self.send(core.drain_pool(name, dry_run=dry_run))

    def hold_vm(self, name: str, *, seconds: float = 24 * 3600.0) -> models.VM:
        """Keep a VM for debugging for ``seconds`` (admin)."""
        return self.send(core.hold_vm(name, seconds=seconds))

    def release_hold(self, name: str) -> models.VM:
        """End a VM's hold: a held VM is terminated (admin)."""
        return self.send(core.release_hold(name))

    def audit(
        self, *, vm: str | None = None, pool: str | None = None, limit: int | None = None
    ) -> list[models.AuditEntry]:
        """Operators' actions, newest first, of one VM or pool if given (admin)."""
        return self.send(core.audit(vm=vm, pool=pool, limit=limit))

    def reconcile_dry_run(self) -> list[models.ReconcileReport]:
        """What reconciliation would terminate or mark now; changes nothing (admin)."""
        return self.send(core.reconcile_dry_run())

    def reload_config(self) -> models.ReloadResult:
        """Make the server re-read and apply its configuration file (admin)."""
        return self.send(core.reload_config())

    def register_vm(self, pool: str, name: str, address: str) -> models.VM:
        """Add a machine made elsewhere to ``pool`` once it passes a livecheck (admin)."""
        return self.send(core.register_vm(pool, name, address))

    def forget_vm(self, name: str, *, force: bool = False) -> models.VM:
        """Stop tracking a VM without touching it; ``force`` also one in use (admin)."""
        return self.send(core.forget_vm(name, force=force))

    def return_machine(self, name: str) -> models.Machine:
        """Put a static pool's machine back in service after maintenance (admin)."""
        return self.send(core.return_machine(name))

    def machine_maintenance(self, name: str, reason: str) -> models.Machine:
        """Take a static pool's machine out of service with ``reason`` (admin)."""
        return self.send(core.machine_maintenance(name, reason))

    def pool_info(self, pool: str) -> dict[str, JSON]:
        """Every key/value pair of a pool's info."""
        return self.send(core.get_pool_info(pool))

    def get_pool_info(self, pool: str, key: str) -> JSON:
        """One key of a pool's info (``NotFound`` when it is not set)."""
        return (self.send(core.get_pool_info_key(pool, key))).value

    def set_pool_info(self, pool: str, key: str, value: JSON) -> None:
        """Set one key of a pool's info to a JSON value (``None`` removes it; admin)."""
        self.send(core.set_pool_info(pool, key, value))

    # --- pools, VMs, tasks, locks ------------------------------------------------------------

    def list_pools(self) -> list[models.PoolStatus]:
        """Every pool with its counts."""
        return self.send(core.list_pools())

    def get_pool(self, name: str) -> models.PoolStatus:
        """One pool."""
        return self.send(core.get_pool(name))

    def list_vms(
        self,
        *,
        pool: str | None = None,
        state: str | None = None,
        ticket_meta: Mapping[str, str] | None = None,
    ) -> list[models.VM]:
        """VMs, optionally of one pool, in one state, or held by open tickets carrying every
        ``ticket_meta`` pair (admin)."""
        return self.send(core.list_vms(pool=pool, state=state, ticket_meta=ticket_meta))

    def get_vm(self, name: str) -> models.VM:
        """One VM (admin)."""
        return self.send(core.get_vm(name))

    def vm_logs(
        self, name: str, *, after: int = 0, limit: int = 100
    ) -> list[models.CommandLogEntry]:
        """The backend commands run for VM ``name`` with an id above ``after``, oldest first:
        argv, exit status, duration, stdout and stderr (admin)."""
        return self.send(core.vm_logs(name, after=after, limit=limit))

    def events(
        self,
        *,
        last_id: int | None = None,
        kinds: Sequence[str] | None = None,
        reconnect: bool = True,
    ) -> Iterator[sse.ServerEvent]:
        """The server's event stream (``GET /v1/events``), event by event, for ever.

        ``last_id`` starts after that event (the server replays what it still keeps, or sends
        ``resync``); ``kinds`` narrows it (``ticket``, ``vm``, ``task``, ``pool``). A stream that
        ends or breaks is reopened with ``Last-Event-ID`` (waiting 1 s, doubling up to 30 s
        while it fails), so nothing is missed silently; with ``reconnect=False`` the first
        break ends the iteration (a lost connection raises :class:`ServerUnreachable`). An
        error answer (a bad token, ...) raises its :mod:`corral.exceptions` class.
        """
        from corral.client import sse  # here: only the event stream needs it

        resume = sse.Resume(last_id, None if kinds is None else tuple(kinds))
        http = self._stream_client()
        timeout = httpxload.load().Timeout(self.timeout, read=sse.READ_TIMEOUT)
        while True:
            try:
                with core.transport_errors(self.url, self.timeout):
                    with http.stream(
                        "GET",
                        sse.PATH,
                        headers=resume.headers(self._headers),
                        params=resume.params(),
                        timeout=timeout,
                    ) as response:
                        if response.status_code != 200:
                            response.read()
                            raise core.error_from(
                                response.status_code,
                                sse.body(response.content),
                                response.content,
                            )
                        decoder = sse.Decoder()
                        for line in response.iter_lines():
                            event = decoder.feed(line)
                            if event is not None:
                                resume.seen(event)
                                yield event
            except exceptions.ServerUnreachable:
                if not reconnect:
                    raise
            if not reconnect:
                return
            time.sleep(resume.backoff())

    def terminate_pool_vms(
        self,
        pool: str,
        *,
        states: Sequence[str] | None = None,
        unused: bool = False,
        dry_run: bool = False,
    ) -> list[models.VM]:
        """Terminate a pool's VMs in bulk (admin); with ``dry_run``, which ones."""
        return self.send(
            core.terminate_pool_vms(pool, states=states, unused=unused, dry_run=dry_run)
        )

    def terminate_vm(self, name: str, *, if_states: Sequence[str] | None = None) -> models.VM:
        """Terminate a VM, even one still spawning; with ``if_states``, only a VM in one of
        them (:class:`VMStateMismatch` otherwise) (admin)."""
        return self.send(core.terminate_vm(name, if_states=if_states))

    def summary(self, *, pool: str | None = None) -> models.PoolSummary:
        """Every pool (or one) and its VMs as human-readable text (admin)."""
        return self.send(core.summary(pool=pool))

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

    def list_hosts(self) -> list[models.Host]:
        """Every host of the cluster, alive or dead, and the pools it leads (admin)."""
        return self.send(core.list_hosts())

    def health(self) -> models.Health:
        """The server's health."""
        return self.send(core.health())
