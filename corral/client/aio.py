"""The asyncio Python client: :class:`AsyncClient`, a thin I/O layer over :mod:`corral.client.core`.

The twin of :class:`corral.client.Client` (same methods, awaited).
:meth:`AsyncClient.acquire` renews the lease from an asyncio task while the block runs and
closes the ticket on exit, also when the block raises or is cancelled.

This module must not describe requests or parse responses itself: that is the core's job.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import TypeVar, Unpack

from corral.client import httpxload

httpxload.load()  # before ``import httpx``: without its command line tool

import httpx  # noqa: E402

from corral import exceptions  # noqa: E402
from corral.client import core, flows, models, sse  # noqa: E402
from corral.types import JSON  # noqa: E402

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of a corral server (see :class:`corral.client.Client`)."""

    def __init__(
        self,
        url: str = core.DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._http = http or httpx.AsyncClient(
            base_url=url, timeout=timeout, verify=core.verify(url)
        )
        self._headers = core.headers(token)

    async def send(self, call: core.Call[T]) -> T:
        """Send one call and return its typed result (raises the server's CorralError)."""
        request = core.request(call, self._headers, self.timeout)
        with core.transport_errors(self.url, request["timeout"]):
            response = await self._http.request(**request)
        return core.parse(call, response.status_code, response.content)

    async def run(self, flow: flows.Flow[T]) -> T:
        """Drive a multi-request flow of :mod:`corral.client.flows` to its end."""
        while (call := flow.pending) is not None:
            if isinstance(call, flows.Pause):
                await asyncio.sleep(call.seconds)
                flow.resume(None)
                continue
            try:
                answer = await self.send(call)
            except exceptions.CorralError as exc:
                flow.fail(exc)
            else:
                flow.resume(answer)
        return flow.value

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- tickets ----------------------------------------------------------------------------

    async def create_ticket(
        self, *, wait: float | None = None, **request: Unpack[core.TicketArgs]
    ) -> models.Ticket:
        """Ask for one VM (``pool=`` or ``tags=``, see :class:`~corral.client.core.TicketArgs`);
        with ``wait``, the answer comes once it is assigned (or after ``wait`` seconds), else at
        once with the ticket usually still waiting."""
        return await self.send(core.create_ticket(wait=wait, **request))

    async def get_ticket(self, ticket_id: str, *, wait: float | None = None) -> models.Ticket:
        """One ticket; with ``wait``, long-poll up to that many seconds for its assignment."""
        return await self.send(core.get_ticket(ticket_id, wait=wait))

    async def wait_ticket(self, ticket_id: str, timeout: float | None = None) -> models.Ticket:
        """Wait until the ticket is assigned; :class:`TicketTimeout` after ``timeout`` seconds."""
        return await self.run(flows.wait_for(ticket_id, timeout, time.monotonic))

    async def renew_ticket(self, ticket_id: str) -> models.Ticket:
        """Extend the ticket's lease."""
        return await self.send(core.renew_ticket(ticket_id))

    async def close_ticket(self, ticket_id: str) -> models.Ticket:
        """Give the ticket's VM back, or cancel the ticket if it still waits."""
        return await self.send(core.close_ticket(ticket_id))

    async def list_tickets(
        self,
        *,
        owner: str | None = None,
        state: str | Sequence[str] | None = None,
        meta: Mapping[str, str] | None = None,
        limit: int | None = None,
    ) -> list[models.Ticket]:
        """Tickets visible to this token, optionally filtered (see :func:`core.list_tickets`)."""
        return await self.send(core.list_tickets(owner=owner, state=state, meta=meta, limit=limit))

    @contextlib.asynccontextmanager
    async def acquire(
        self, *, timeout: float | None = None, **request: Unpack[core.TicketArgs]
    ) -> AsyncIterator[models.Ticket]:
        """Hold one VM for the ``async with`` block (see :meth:`corral.client.Client.acquire`)."""
        acquisition = flows.Acquisition(timeout=timeout, **request)
        try:
            ticket = await self.run(acquisition.obtain(time.monotonic))
            async with self._renewing(ticket):
                yield ticket
        except BaseException:
            # Shielded: a cancelled acquire must still give its ticket back, found by key if the
            # create's answer never arrived.
            await asyncio.shield(self.run(acquisition.release(quiet=True)))
            raise
        await self.run(acquisition.release())

    @contextlib.asynccontextmanager
    async def _renewing(self, ticket: models.Ticket) -> AsyncIterator[None]:
        async def renew(ticket: models.Ticket = ticket) -> None:
            while True:
                await asyncio.sleep(core.renew_interval(ticket, time.time()))
                try:
                    ticket = await self.renew_ticket(ticket.id)
                except exceptions.CorralError as exc:
                    if flows.renew_failed(ticket.id, exc):
                        return

        renewer = asyncio.create_task(renew(), name=f"renew-{ticket.id}")
        try:
            yield
        finally:
            renewer.cancel()
            await asyncio.wait({renewer})  # unlike awaiting it, never swallows our own cancel

    # --- operators' controls ----------------------------------------------------------------

    async def pause_pool(self, name: str) -> models.PoolMode:
        """Stop preallocating a pool (admin)."""
        return await self.send(core.pause_pool(name))

    async def resume_pool(self, name: str) -> models.PoolMode:
        """Undo a pause or a drain (admin)."""
        return await self.send(core.resume_pool(name))

    async def drain_pool(self, name: str, *, dry_run: bool = False) -> models.DrainResult:
        """Drain a pool; with ``dry_run``, only say which idle VMs would go (admin)."""
        return await self.send(core.drain_pool(name, dry_run=dry_run))

    async def hold_vm(self, name: str, *, seconds: float = 24 * 3600.0) -> models.VM:
        """Keep a VM for debugging for ``seconds`` (admin)."""
        return await self.send(core.hold_vm(name, seconds=seconds))

    async def release_hold(self, name: str) -> models.VM:
        """End a VM's hold: a held VM is terminated (admin)."""
        return await self.send(core.release_hold(name))

    async def audit(
        self, *, vm: str | None = None, pool: str | None = None, limit: int | None = None
    ) -> list[models.AuditEntry]:
        """Operators' actions, newest first, of one VM or pool if given (admin)."""
        return await self.send(core.audit(vm=vm, pool=pool, limit=limit))

    async def reconcile_dry_run(self) -> list[models.ReconcileReport]:
        """What reconciliation would terminate or mark now; changes nothing (admin)."""
        return await self.send(core.reconcile_dry_run())

    async def reload_config(self) -> models.ReloadResult:
        """Make the server re-read and apply its configuration file (admin)."""
        return await self.send(core.reload_config())

    async def register_vm(self, pool: str, name: str, address: str) -> models.VM:
        """Add a machine made elsewhere to ``pool`` once it passes a livecheck (admin)."""
        return await self.send(core.register_vm(pool, name, address))

    async def forget_vm(self, name: str, *, force: bool = False) -> models.VM:
        """Stop tracking a VM without touching it; ``force`` also one in use (admin)."""
        return await self.send(core.forget_vm(name, force=force))

    async def return_machine(self, name: str) -> models.Machine:
        """Put a static pool's machine back in service after maintenance (admin)."""
        return await self.send(core.return_machine(name))

    async def machine_maintenance(self, name: str, reason: str) -> models.Machine:
        """Take a static pool's machine out of service with ``reason`` (admin)."""
        return await self.send(core.machine_maintenance(name, reason))

    async def pool_info(self, pool: str) -> dict[str, JSON]:
        """Every key/value pair of a pool's info."""
        return await self.send(core.get_pool_info(pool))

    async def get_pool_info(self, pool: str, key: str) -> JSON:
        """One key of a pool's info (``NotFound`` when it is not set)."""
        return (await self.send(core.get_pool_info_key(pool, key))).value

    async def set_pool_info(self, pool: str, key: str, value: JSON) -> None:
        """Set one key of a pool's info to a JSON value (``None`` removes it; admin)."""
        await self.send(core.set_pool_info(pool, key, value))

    # --- pools, VMs, tasks, locks ------------------------------------------------------------

    async def list_pools(self) -> list[models.PoolStatus]:
        """Every pool with its counts."""
        return await self.send(core.list_pools())

    async def get_pool(self, name: str) -> models.PoolStatus:
        """One pool."""
        return await self.send(core.get_pool(name))

    async def list_vms(
        self,
        *,
        pool: str | None = None,
        state: str | None = None,
        ticket_meta: Mapping[str, str] | None = None,
    ) -> list[models.VM]:
        """VMs, optionally of one pool, in one state, or held by open tickets carrying every
        ``ticket_meta`` pair (admin)."""
        return await self.send(core.list_vms(pool=pool, state=state, ticket_meta=ticket_meta))

    async def get_vm(self, name: str) -> models.VM:
        """One VM (admin)."""
        return await self.send(core.get_vm(name))

    async def terminate_pool_vms(
        self,
        pool: str,
        *,
        states: Sequence[str] | None = None,
        unused: bool = False,
        dry_run: bool = False,
    ) -> list[models.VM]:
        """Terminate a pool's VMs in bulk (admin); with ``dry_run``, which ones."""
        return await self.send(
            core.terminate_pool_vms(pool, states=states, unused=unused, dry_run=dry_run)
        )

    async def terminate_vm(self, name: str, *, if_states: Sequence[str] | None = None) -> models.VM:
        """Terminate a VM, even one still spawning; with ``if_states``, only a VM in one of
        them (:class:`VMStateMismatch` otherwise) (admin)."""
        return await self.send(core.terminate_vm(name, if_states=if_states))

    async def summary(self, *, pool: str | None = None) -> models.PoolSummary:
        """Every pool (or one) and its VMs as human-readable text (admin)."""
        return await self.send(core.summary(pool=pool))

    async def vm_logs(
        self, name: str, *, after: int = 0, limit: int = 100
    ) -> list[models.CommandLogEntry]:
        """The backend commands run for VM ``name`` with an id above ``after``, oldest first
        (admin)."""
        return await self.send(core.vm_logs(name, after=after, limit=limit))

    async def events(
        self,
        *,
        last_id: int | None = None,
        kinds: Sequence[str] | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[sse.ServerEvent]:
        """The server's event stream, reopened with ``Last-Event-ID`` when it breaks: see
        :meth:`corral.client.Client.events`."""
        resume = sse.Resume(last_id, None if kinds is None else tuple(kinds))
        timeout = httpx.Timeout(self.timeout, read=sse.READ_TIMEOUT)
        while True:
            try:
                with core.transport_errors(self.url, self.timeout):
                    async with self._http.stream(
                        "GET",
                        sse.PATH,
                        headers=resume.headers(self._headers),
                        params=resume.params(),
                        timeout=timeout,
                    ) as response:
                        if response.status_code != 200:
                            await response.aread()
                            raise core.error_from(
                                response.status_code,
                                sse.body(response.content),
                                response.content,
                            )
                        decoder = sse.Decoder()
                        async for line in response.aiter_lines():
                            event = decoder.feed(line)
                            if event is not None:
                                resume.seen(event)
                                yield event
            except exceptions.ServerUnreachable:
                if not reconnect:
                    raise
            if not reconnect:
                return
            await asyncio.sleep(resume.backoff())

    async def list_tasks(
        self, *, state: str | None = None, tag: str | None = None
    ) -> list[models.Task]:
        """Tasks of the engine (admin)."""
        return await self.send(core.list_tasks(state=state, tag=tag))

    async def get_task(self, task_id: str) -> models.Task:
        """One task (admin)."""
        return await self.send(core.get_task(task_id))

    async def stop_task(self, task_id: str, *, force: bool = False) -> models.Task:
        """Stop a task (admin)."""
        return await self.send(core.stop_task(task_id, force=force))

    async def rollback_task(self, task_id: str) -> models.Task:
        """Roll back a done task (admin)."""
        return await self.send(core.rollback_task(task_id))

    async def clean_task(self, task_id: str) -> None:
        """Forget a done task (admin)."""
        await self.send(core.clean_task(task_id))

    async def list_locks(self) -> list[models.LockStatus]:
        """Every lock's holders and queue (admin)."""
        return await self.send(core.list_locks())

    async def list_hosts(self) -> list[models.Host]:
        """Every host of the cluster, alive or dead, and the pools it leads (admin)."""
        return await self.send(core.list_hosts())

    async def health(self) -> models.Health:
        """The server's health."""
        return await self.send(core.health())
