"""The pure rules of cluster membership: who is alive, which incarnation wins, whether the hosts
agree on the pool configuration, and which live host should lead a pool.

Everything here is a function of plain values and ``now`` (seconds on the database's clock, the
one every lease is written with): no I/O, no clock, no threads. The service that registers and
heartbeats (``corral.cluster.hosts``) and the controller feed it what they read.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from corral import exceptions


class HostState(enum.StrEnum):
    """A host is alive while its lease is current, dead once it lapsed."""

    ALIVE = "alive"
    DEAD = "dead"


@dataclass(frozen=True, slots=True)
class Member:
    """What membership needs of a host row."""

    host_id: str
    incarnation: int
    config_hash: str
    lease_expires_at: float

    def state(self, now: float) -> HostState:
        """ALIVE while ``now`` is within the lease (the expiry instant included)."""
        return HostState.ALIVE if now <= self.lease_expires_at else HostState.DEAD


def alive(members: Iterable[Member], now: float) -> list[Member]:
    """The live members, by host id."""
    return sorted((m for m in members if m.state(now) is HostState.ALIVE), key=lambda m: m.host_id)


def newest(a: Member, b: Member) -> Member:
    """Of two records of one host, the later incarnation (a restart supersedes at once)."""
    if a.host_id != b.host_id:
        raise exceptions.InvalidInput(
            f"incarnations of two different hosts ({a.host_id!r}, {b.host_id!r}) do not compare"
        )
    return a if a.incarnation >= b.incarnation else b


def config_disagreement(members: Iterable[Member], now: float) -> dict[str, list[str]]:
    """Configuration hash -> live host ids, when live hosts disagree; empty when they agree."""
    groups: dict[str, list[str]] = {}
    for member in alive(members, now):
        groups.setdefault(member.config_hash, []).append(member.host_id)
    return groups if len(groups) > 1 else {}


def disagreement_warning(members: Iterable[Member], now: float) -> str | None:
    """A one-line warning naming which hosts run which configuration, or ``None``."""
    groups = config_disagreement(members, now)
    if not groups:
        return None
    parts = [f"{h[:12]}: {', '.join(hosts)}" for h, hosts in sorted(groups.items())]
    return "hosts disagree on the pool configuration (" + "; ".join(parts) + ")"


def may_take_over(dead: Member, now: float, grace: float = 0.0) -> bool:
    """Whether a survivor may take over ``dead``'s work: its lease lapsed ``grace`` s ago."""
    if grace < 0:
        raise exceptions.InvalidInput(f"grace must be >= 0 seconds, got {grace!r}")
    return now > dead.lease_expires_at + grace


def _weight(pool: str, host_id: str) -> int:
    digest = hashlib.blake2b(f"{pool}\x00{host_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def preferred_leader(pool: str, live: Sequence[Member]) -> str | None:
    """The live host that should lead ``pool``: rendezvous hashing, so pools spread over the
    hosts and only the pools of a host that joins or leaves move. ``None`` with no live host."""
    if not live:
        return None
    return max(live, key=lambda m: (_weight(pool, m.host_id), m.host_id)).host_id
