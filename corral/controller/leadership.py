"""Which pools this host leads: one lease with a fencing epoch per pool (``pool/<name>``).

After every heartbeat (:class:`corral.cluster.service.Membership` observer) each pool's lease is
renewed by its holder, taken by the live host rendezvous hashing prefers
(:func:`corral.cluster.membership.preferred_leader`, so pools spread over the hosts) when it is
free or lapsed, and given up by a holder that is no longer preferred while the preferred host is
alive (the pool moves to it at its next heartbeat). A lease that stayed free (or lapsed) for one
lease time is taken by any live host, so a pool never stays leaderless.

:meth:`Leadership.leads` is the local, conservative answer (false as soon as this process's own
monotonic clock says the lease may have lapsed, so a process woken from a pause stops at once);
:meth:`Leadership.check` asks the database (one conditional read) and raises
``StaleEpoch`` (logged) when the epoch is no longer the live one: call it before a write made on
behalf of the leadership. This module must not run maintenance itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from corral import exceptions
from corral.cluster import membership
from corral.cluster.hosts import HostRecord
from corral.cluster.service import Membership

log = logging.getLogger(__name__)


def lease_name(pool: str) -> str:
    """The lease a pool's leader holds."""
    return f"pool/{pool}"


@dataclass(frozen=True, slots=True)
class Held:
    """A pool lease this host holds: its epoch and the local monotonic instant it may lapse."""

    epoch: int
    until: float


class Leadership:
    """The pools this host leads (see the module docstring)."""

    def __init__(
        self,
        member: Membership,
        pools: Callable[[], Iterable[str]],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._member = member
        self._pools = pools
        self._clock = clock
        self._held: dict[str, Held] = {}
        self._free_since: dict[str, float] = {}
        self.on_change = on_change
        """Called with (pool, leads) when this host starts or stops leading a pool."""

    def leads(self, pool: str) -> bool:
        """Whether this host leads ``pool`` now (local view; see :meth:`check`)."""
        held = self._held.get(pool)
        return held is not None and self._clock() < held.until

    def epoch(self, pool: str) -> int | None:
        """The epoch this host leads ``pool`` under, or ``None``."""
        held = self._held.get(pool)
        return held.epoch if held is not None and self._clock() < held.until else None

    def led(self) -> dict[str, int]:
        """Pool -> epoch, for every pool led now."""
        return {p: h.epoch for p, h in sorted(self._held.items()) if self._clock() < h.until}

    async def check(self, pool: str) -> int:
        """The live epoch of ``pool``, confirmed by the database; ``StaleEpoch`` (logged)
        when this host does not lead it any more."""
        held = self._held.get(pool)
        if held is None or self._clock() >= held.until:
            raise exceptions.StaleEpoch(f"host {self._member.host_id} does not lead pool {pool!r}")
        try:
            await self._member.repo.check_lease(lease_name(pool), self._member.session, held.epoch)
        except exceptions.StaleEpoch as exc:
            log.error("cluster: refused a write for pool %s: %s", pool, exc)
            self._drop(pool)
            raise
        return held.epoch

    def _drop(self, pool: str) -> None:
        if self._held.pop(pool, None) is not None:
            log.log(
                self._member.level,
                "cluster: host %s stops leading pool %s",
                self._member.host_id,
                pool,
            )
            if self.on_change is not None:
                self.on_change(pool, False)

    def drop_all(self) -> None:
        """Forget every lease (the host lease was lost: every epoch is stale)."""
        for pool in list(self._held):
            self._drop(pool)

    async def release_all(self) -> None:
        """Give every lease up (a clean stop): the next leader takes over at once."""
        for pool in list(self._held):
            try:
                await self._member.repo.release_lease(lease_name(pool), self._member.session)
            except exceptions.CorralError as exc:
                log.warning("cluster: could not release pool %s: %s", pool, exc)
            self._drop(pool)

    async def update(self, hosts: Sequence[HostRecord], lost: bool) -> None:
        """After a heartbeat: renew, take, hand over (see the module docstring)."""
        if lost:
            self.drop_all()
        live = [
            membership.Member(h.host_id, h.incarnation, h.config_hash, h.lease_expires_at)
            for h in hosts
            if h.alive
        ]
        now = self._clock()
        repo = self._member.repo
        current = {lease.name: lease for lease in await repo.list_leases()}
        db_now = await repo.now()
        for pool in sorted(self._pools()):
            preferred = membership.preferred_leader(pool, live)
            mine = pool in self._held
            if mine and preferred not in (None, self._member.host_id):
                await self._hand_over(pool)
                continue
            lease = current.get(lease_name(pool))
            if lease is not None and lease.live(db_now):
                self._free_since.pop(pool, None)
                waited = 0.0
            else:
                waited = now - self._free_since.setdefault(pool, now)
            if mine or preferred == self._member.host_id or waited > self._member.lease:
                await self._take(pool, now)

    async def _hand_over(self, pool: str) -> None:
        try:
            await self._member.repo.release_lease(lease_name(pool), self._member.session)
        finally:
            self._drop(pool)

    async def _take(self, pool: str, started: float) -> None:
        member = self._member
        try:
            lease = await member.repo.take_lease(
                lease_name(pool), member.host_id, member.session, member.lease
            )
        except (exceptions.LeaseHeld, exceptions.LeaseLost):
            self._drop(pool)
            return
        self._free_since.pop(pool, None)
        was = self._held.get(pool)
        # the lease runs from before the request was sent: a conservative local deadline
        self._held[pool] = Held(lease.epoch, started + member.lease)
        if was is None or was.epoch != lease.epoch:
            log.log(
                member.level,
                "cluster: host %s leads pool %s (epoch %d)",
                member.host_id,
                pool,
                lease.epoch,
            )
            if self.on_change is not None:
                self.on_change(pool, True)


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as ``corral hosts`` and ``GET /v1/hosts`` show it."""

    host_id: str
    incarnation: int
    alive: bool
    address: str
    version: str
    config_hash: str
    started_at: float
    heartbeat_at: float
    lease_expires_at: float
    leads: tuple[str, ...]
    """The pools whose leadership lease this host holds, live."""
    tasks: int
    """Unfinished tasks recorded as this incarnation's."""
    this: bool
    """Whether it is the host that answered."""


async def host_views(member: Membership) -> list[HostView]:
    """Every host with the pools it leads (read now, on the repository's clock)."""
    repo = member.repo
    hosts = await repo.list_hosts()
    now = await repo.now()
    led: dict[str, list[str]] = {}
    for lease in await repo.list_leases():
        if lease.session is not None and lease.live(now) and lease.name.startswith("pool/"):
            led.setdefault(lease.session, []).append(lease.name.removeprefix("pool/"))
    counts = await repo.task_hosts()
    return [
        HostView(
            host_id=h.host_id,
            incarnation=h.incarnation,
            alive=h.alive,
            address=h.address,
            version=h.version,
            config_hash=h.config_hash,
            started_at=h.started_at,
            heartbeat_at=h.heartbeat_at,
            lease_expires_at=h.lease_expires_at,
            leads=tuple(sorted(led.get(h.session, ()))),
            tasks=counts.get(f"{h.host_id}#{h.incarnation}", 0),
            this=h.session == member.session,
        )
        for h in hosts
    ]
