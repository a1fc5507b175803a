"""Membership as a service: register, heartbeat, notice a lapsed lease, warn on disagreement.

:class:`Membership` registers this host (a new incarnation and session per start), renews its
lease every ``min(lease / 3, 1 s)``, and after every heartbeat hands the host list to its
observers (leadership, takeover). A heartbeat that finds the lease lapsed (the process was
paused, the database unreachable for longer than the lease) tells the observers the host lost
everything, then registers again as a new incarnation: it rejoins as a follower. When the live
hosts' pool-configuration hashes differ, it logs a warning (once per distinct disagreement) and
:attr:`warning` says so. A clean stop resigns: the lease ends at once.

Uses a :class:`corral.cluster.repository.ClusterRepository`; must not decide leadership or
touch tasks itself (the observers do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from corral import exceptions
from corral.cluster import membership
from corral.cluster.hosts import HostRecord, new_session, validate_lease
from corral.cluster.repository import ClusterRepository, HostInfo, task_host

log = logging.getLogger(__name__)

Observer = Callable[[Sequence[HostRecord], bool], Awaitable[None]]
"""Called after each heartbeat with the hosts and whether this host's lease was lost since."""


class Membership:
    """This host's membership of the cluster (see the module docstring)."""

    def __init__(
        self,
        repo: ClusterRepository,
        host_id: str,
        *,
        lease: float = 15.0,
        info: HostInfo | None = None,
        interval: float | None = None,
        alone: bool = False,
    ) -> None:
        self.repo = repo
        self.level = logging.DEBUG if alone else logging.INFO
        """Level of the membership and leadership news: a host that can be alone (its store is
        its own, e.g. SQLite) has no cluster to speak of at the default level."""
        self.host_id = host_id
        self.lease = validate_lease(lease)
        self.interval = interval if interval is not None else min(self.lease / 3, 1.0)
        self.info = info or HostInfo()
        self.session = ""
        self.incarnation = 0
        self.hosts: list[HostRecord] = []
        """The hosts as of the last heartbeat."""
        self.warning: str | None = None
        """The configuration disagreement of the live hosts, if any."""
        self._observers: list[Observer] = []
        self._task: asyncio.Task[None] | None = None
        self._paused = False

    @property
    def key(self) -> str:
        """This incarnation as tasks record it (``host_id#incarnation``)."""
        return task_host(self.host_id, self.incarnation)

    def observe(self, observer: Observer) -> None:
        """Call ``observer`` after every heartbeat."""
        self._observers.append(observer)

    async def join(self) -> int:
        """Register as a new incarnation; returns it."""
        self.session = new_session()
        self.incarnation = await self.repo.register(
            self.host_id, self.session, self.lease, self.info
        )
        log.log(
            self.level, "cluster: host %s joined as incarnation %d", self.host_id, self.incarnation
        )
        await self._read_hosts()
        return self.incarnation

    async def _read_hosts(self) -> None:
        self.hosts = await self.repo.list_hosts()
        now = await self.repo.now()
        members = [
            membership.Member(h.host_id, h.incarnation, h.config_hash, h.lease_expires_at)
            for h in self.hosts
        ]
        warning = membership.disagreement_warning(members, now)
        if warning is not None and warning != self.warning:
            log.warning("cluster: %s", warning)
        self.warning = warning

    async def beat_once(self) -> bool:
        """One heartbeat and the observers; False when the lease had lapsed (rejoined)."""
        kept = await self.repo.heartbeat(self.session)
        if not kept:
            log.error(
                "cluster: host %s incarnation %d lost its lease (paused or cut off past %.1f s): "
                "it stops leading and rejoins as a new incarnation",
                self.host_id,
                self.incarnation,
                self.lease,
            )
            await self.join()
        else:
            await self._read_hosts()
        for observer in self._observers:
            await observer(self.hosts, not kept)
        return kept

    def start(self) -> None:
        """Heartbeat every :attr:`interval` seconds until :meth:`stop`."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop())

    def pause_heartbeats(self) -> None:
        """Stop heartbeating without resigning (tests: this host "dies" for the others)."""
        self._paused = True

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._paused:
                continue
            try:
                await self.beat_once()
            except exceptions.CorralError as exc:
                log.warning("cluster: heartbeat failed: %s", exc)
            except Exception:
                # the heartbeat must go on: one bad round (a lost connection) is retried
                log.exception("cluster: heartbeat round failed")

    async def stop(self, *, resign: bool = True) -> None:
        """Stop heartbeating; ``resign`` ends the lease at once (a clean stop)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if resign and self.session:
            try:
                await self.repo.resign(self.session)
            except exceptions.CorralError as exc:
                log.warning("cluster: could not resign: %s", exc)
