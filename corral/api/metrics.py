"""``GET /metrics``: corral's state in the Prometheus text format.

Gauges (tickets waiting/assigned per pool, VMs per pool and state, tasks per state) are read from
the controller at scrape time, so they are never stale; spawn and allocation latencies are
histograms fed with every VM that became ready and every ticket that got assigned since the last
scrape (each observed once); backend failures are counters read from the pools' statistics. Each
app has its own registry, so several apps in one process (tests) do not collide.

This module must not change anything in the controller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from corral.api.facade import ControllerFacade
from corral.pools import model

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the Prometheus text exposition format."""

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)


class _BackendFailures(Collector):
    """Backend call failures per pool and operation, from the pools' statistics."""

    def __init__(self) -> None:
        self.pools: Sequence[model.PoolStatus] = ()

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "corral_backend_failures",
            "Backend calls that failed, per pool and operation.",
            labels=["pool", "operation"],
        )
        for pool in self.pools:
            family.add_metric([pool.name, "spawn"], pool.stats.spawn_failures)
            family.add_metric([pool.name, "terminate"], pool.stats.terminate_failures)
            family.add_metric([pool.name, "livecheck"], pool.stats.livecheck_failures)
        return [family]


class Metrics:
    """The registry of one API app and how to refresh it from the controller."""

    def __init__(
        self,
        controller: ControllerFacade,
        task_states: Callable[[], Awaitable[Sequence[str]]],
    ) -> None:
        self._controller = controller
        self._task_states = task_states
        self.registry = CollectorRegistry(auto_describe=True)
        self.tickets = Gauge(
            "corral_tickets",
            "Open tickets per pool and state (waiting, assigned).",
            ["pool", "state"],
            registry=self.registry,
        )
        self.vms = Gauge(
            "corral_vms", "VMs per pool and state.", ["pool", "state"], registry=self.registry
        )
        self.tasks = Gauge("corral_tasks", "Tasks per state.", ["state"], registry=self.registry)
        self.spawn_seconds = Histogram(
            "corral_spawn_seconds",
            "Time from a spawn's start to its VM being ready.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.allocation_seconds = Histogram(
            "corral_allocation_seconds",
            "Time from a ticket's creation to its assignment.",
            ["pool"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.tickets_created = Counter(
            "corral_tickets_created", "Tickets created through the API.", registry=self.registry
        )
        self._failures = _BackendFailures()
        self.registry.register(self._failures)
        self._seen_vms: set[str] = set()
        self._seen_tickets: set[str] = set()

    def ticket_created(self) -> None:
        """Count one ticket created through the API."""
        self.tickets_created.inc()

    async def render(self) -> bytes:
        """Refresh from the controller and return the text exposition."""
        pools = await self._controller.list_pools()
        self._failures.pools = pools
        self.tickets.clear()
        self.vms.clear()
        for pool in pools:
            self.tickets.labels(pool.name, model.TicketState.WAITING.value).set(
                pool.waiting_tickets
            )
            self.tickets.labels(pool.name, model.TicketState.ASSIGNED.value).set(
                pool.assigned_tickets
            )
            for state in model.VMState:
                self.vms.labels(pool.name, state.value).set(pool.count(state))
        self.tasks.clear()
        counts: dict[str, int] = {}
        for task_state in await self._task_states():
            counts[task_state] = counts.get(task_state, 0) + 1
        for task_state, count in counts.items():
            self.tasks.labels(task_state).set(count)
        self._observe_vms(await self._controller.list_vms())
        self._observe_tickets(await self._controller.list_tickets())
        return generate_latest(self.registry)

    def _observe_vms(self, vms: Sequence[model.VM]) -> None:
        present = set()
        for vm in vms:
            present.add(vm.name)
            if vm.ready_at is not None and vm.name not in self._seen_vms:
                self._seen_vms.add(vm.name)
                self.spawn_seconds.labels(vm.pool).observe(max(0.0, vm.ready_at - vm.created_at))
        self._seen_vms &= present  # forget VMs the store forgot: the set stays bounded

    def _observe_tickets(self, tickets: Sequence[model.Ticket]) -> None:
        present = set()
        for ticket in tickets:
            present.add(ticket.id)
            if ticket.assigned_at is not None and ticket.id not in self._seen_tickets:
                self._seen_tickets.add(ticket.id)
                wait = max(0.0, ticket.assigned_at - ticket.created_at)
                self.allocation_seconds.labels(ticket.pool or "").observe(wait)
        self._seen_tickets &= present
