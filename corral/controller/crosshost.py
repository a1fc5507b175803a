"""The controller's side of cross-host wake-ups (:mod:`corral.cluster.wakeups`, SPEC §8).

On a PostgreSQL store, what this controller changes is announced to the other hosts (a ticket
changed, a pool that needs supply), and what they announce wakes this controller's long-poll
waiters and kicks its preallocation at once instead of at the next tick. On any other store
this does nothing (SQLite and memory stores are single-host).

A VM freed for assignment is *not* announced: the host whose commit freed it runs an
assignment round right after that commit, over every waiting ticket of the cluster, and so
does the host whose commit created a ticket. Of two such commits, the round that follows the
later one sees both, so no ticket is left waiting beside a ready VM; the ticket's waiters on
other hosts learn of its assignment by the ticket's announcement. (Every host also running a
round on every freed VM made the hosts race for the same tickets and VMs, and all but one lose
and read again: issue 11, scale-out row.)

This module only translates; it must not decide anything about tickets or VMs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from corral.store import Store
from corral.store import parse as parse_store_url

if TYPE_CHECKING:
    from corral.cluster.wakeups import Wakeups
    from corral.controller.tickets import Tickets

log = logging.getLogger(__name__)


class CrossHostHost(Protocol):
    """What the wake-ups need from the controller."""

    store: Store
    ticket_ops: Tickets

    @property
    def maintains(self) -> bool:
        """Whether this controller preallocates (only then are spawn wake-ups acted on)."""
        ...

    def pool_names(self) -> Sequence[str]:
        """The pools this controller runs."""
        ...

    def leads(self, pool: str) -> bool:
        """Whether this host runs ``pool``'s maintenance (its preallocation) now."""
        ...

    def kick_assign(self) -> None:
        """Re-run the assignment soon."""
        ...

    def kick_spawn(self, pool: str) -> None:
        """Re-plan ``pool``'s preallocation soon."""
        ...


class CrossHost:
    """Announces this controller's changes and acts on the other hosts' announcements."""

    def __init__(self, controller: CrossHostHost) -> None:
        self._ctl = controller
        self.wakeups: Wakeups | None = None
        """The connection to the other hosts (``None`` off PostgreSQL or before ``start``)."""

    async def start(self) -> None:
        """Listen for the other hosts (PostgreSQL stores only)."""
        if self.wakeups is not None or parse_store_url(self._ctl.store.url).kind != "postgresql":
            return
        from corral.cluster.wakeups import Wakeups

        self.wakeups = await Wakeups(
            self._ctl.store.url,
            on_ticket=self._ctl.ticket_ops.changed_elsewhere,
            on_spawn=self._on_spawn,
            on_resync=self._resync,
        ).start()

    async def close(self) -> None:
        """Stop listening and sending."""
        wakeups, self.wakeups = self.wakeups, None
        if wakeups is not None:
            await wakeups.close()

    # --- this host's changes ------------------------------------------------------------------

    def spawn_wanted(self, pool: str) -> None:
        """Ask the hosts that preallocate to re-plan ``pool`` (this one does not)."""
        if self.wakeups is not None:
            self.wakeups.spawn(pool)

    def ticket_changed(self, ticket_id: str) -> None:
        """Announce that ``ticket_id`` changed (a waiter on another host re-reads it)."""
        if self.wakeups is not None:
            self.wakeups.ticket(ticket_id)

    # --- the other hosts' changes -------------------------------------------------------------

    def _on_spawn(self, pool: str) -> None:
        # Only the pool's leader re-plans. A host that does not lead the pool must not even
        # kick: its kick would announce the wake-up again (it asks "the host that preallocates"),
        # and two such hosts would echo it to each other for ever (issue 11, scale-out row).
        ctl = self._ctl
        if ctl.maintains and pool in ctl.pool_names() and ctl.leads(pool):
            ctl.kick_spawn(pool)

    def _resync(self) -> None:
        # Announcements sent while the connection was down are lost: decide everything again.
        log.info("cross-host wake-ups reconnected; re-reading tickets and pools")
        self._ctl.ticket_ops.changed_elsewhere(None)
        self._ctl.kick_assign()
        for pool in self._ctl.pool_names():
            self._on_spawn(pool)
