"""What :class:`corral.controller.crosshost.CrossHost` announces and acts on, without a
database: a recording stand-in for the wake-up connection and a stand-in controller."""

from __future__ import annotations

from collections.abc import Sequence

from corral.controller.crosshost import CrossHost


class Sent:
    """Records what would be sent to the other hosts."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def ticket(self, ticket_id: str) -> None:
        self.messages.append(("ticket", ticket_id))

    def spawn(self, pool: str) -> None:
        self.messages.append(("spawn", pool))


class Host:
    """The controller's side: which pools it leads, what it was asked to do."""

    store = None
    ticket_ops = None
    maintains = True

    def __init__(self, leads: bool) -> None:
        self._leads = leads
        self.spawn_kicks: list[str] = []
        self.assign_kicks = 0

    def pool_names(self) -> Sequence[str]:
        return ["p"]

    def leads(self, pool: str) -> bool:
        return self._leads

    def kick_assign(self) -> None:
        self.assign_kicks += 1

    def kick_spawn(self, pool: str) -> None:
        self.spawn_kicks.append(pool)


def crosshost(host: Host) -> tuple[CrossHost, Sent]:
    cross = CrossHost(host)  # type: ignore[arg-type]
    sent = Sent()
    cross.wakeups = sent  # type: ignore[assignment]
    return cross, sent


def test_only_the_pools_leader_acts_on_a_spawn_wakeup() -> None:
    """A host that does not lead the pool neither re-plans nor relays (its ``kick_spawn``
    would announce it again). Breakage caught: mutant ``spawn-wakeup-echo``."""
    follower, leader = Host(leads=False), Host(leads=True)
    crosshost(follower)[0]._on_spawn("p")
    crosshost(leader)[0]._on_spawn("p")
    crosshost(leader)[0]._on_spawn("not-mine")
    assert follower.spawn_kicks == []
    assert leader.spawn_kicks == ["p"]
