"""The pure rules of a leadership lease with a fencing epoch (one pool's maintenance, say).

A lease names a thing to lead; one host session holds it until ``expires_at``. Every change of
holder (including the same host coming back after its lease lapsed) increases the ``epoch``, and
every write made on behalf of the lease carries the epoch it was taken with: :func:`check`
refuses a stale one, so a leader that was paused past its lease cannot act when it wakes.

Values in, values out: no I/O and no clock (``now`` is the database's clock, passed in). The
store applies a result with a conditional write on the epoch it read.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from corral import exceptions


@dataclass(frozen=True, slots=True)
class Lease:
    """Who leads ``name`` (``session`` of ``holder``), until when, under which epoch."""

    name: str
    holder: str | None
    session: str | None
    epoch: int
    expires_at: float

    def live(self, now: float) -> bool:
        """Whether someone holds the lease at ``now``."""
        return self.session is not None and now <= self.expires_at


def _duration(duration: float) -> float:
    if not 0.0 < duration < 86400.0:
        raise exceptions.InvalidInput(f"lease duration must be in (0, 86400) s, got {duration!r}")
    return duration


def take(
    lease: Lease | None, name: str, holder: str, session: str, now: float, duration: float
) -> Lease:
    """Take (or keep) the lease: renewed by its live holder's session, else a new epoch.

    ``LeaseHeld`` if another session holds it and it has not lapsed; nothing changes then.
    """
    duration = _duration(duration)
    if lease is None:
        return Lease(name, holder, session, 1, now + duration)
    if lease.name != name:
        raise exceptions.InvalidInput(f"lease {lease.name!r} is not {name!r}")
    if lease.live(now):
        if lease.session != session:
            raise exceptions.LeaseHeld(
                f"{name!r} is led by {lease.holder!r} (epoch {lease.epoch}) until "
                f"{lease.expires_at:.3f}"
            )
        return replace(lease, expires_at=now + duration)
    return Lease(name, holder, session, lease.epoch + 1, now + duration)


def renew(lease: Lease, session: str, now: float, duration: float) -> Lease:
    """Extend the lease of its live holder; ``LeaseLost`` if it lapsed or changed hands."""
    duration = _duration(duration)
    if lease.session != session or not lease.live(now):
        raise exceptions.LeaseLost(
            f"lease {lease.name!r} is no longer held by session {session!r} (epoch {lease.epoch})"
        )
    return replace(lease, expires_at=now + duration)


def release(lease: Lease, session: str) -> Lease:
    """Give the lease up (a clean shutdown): free at once; the next taker gets a new epoch."""
    if lease.session != session:
        return lease  # not ours (any more): nothing to give up
    return replace(lease, holder=None, session=None, expires_at=0.0)


def check(lease: Lease, epoch: int, now: float) -> None:
    """Refuse (``StaleToken``) an action taken under ``epoch`` unless it is the live epoch."""
    if epoch != lease.epoch or not lease.live(now):
        raise exceptions.StaleToken(
            f"epoch {epoch} of lease {lease.name!r} is stale: the lease is at epoch "
            f"{lease.epoch}{'' if lease.live(now) else ' and lapsed'}"
        )
