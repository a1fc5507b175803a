"""The pure membership rules: liveness by lease, incarnations, configuration disagreement,
takeover timing and the spread of pool leadership."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.cluster import membership
from corral.cluster.membership import HostState, Member


def m(host: str, expires: float, inc: int = 1, config: str = "c1") -> Member:
    return Member(host_id=host, incarnation=inc, config_hash=config, lease_expires_at=expires)


def test_alive_until_the_lease_lapses() -> None:
    host = m("a", expires=100.0)
    assert host.state(100.0) is HostState.ALIVE
    assert host.state(100.001) is HostState.DEAD
    assert [x.host_id for x in membership.alive([m("b", 50.0), host, m("c", 200.0)], 99.0)] == [
        "a",
        "c",
    ]


def test_newer_incarnation_wins_and_other_hosts_do_not_compare() -> None:
    old, new = m("a", 1.0, inc=3), m("a", 0.0, inc=4)
    assert membership.newest(old, new) is new and membership.newest(new, old) is new
    with pytest.raises(exceptions.InvalidInput, match="two different hosts"):
        membership.newest(old, m("b", 1.0))


def test_config_disagreement_names_the_live_hosts_only() -> None:
    hosts = [m("a", 10.0, config="x"), m("b", 10.0, config="y"), m("c", 1.0, config="z")]
    assert membership.config_disagreement(hosts, 5.0) == {"x": ["a"], "y": ["b"]}
    warning = membership.disagreement_warning(hosts, 5.0)
    assert warning is not None and "a" in warning and "b" in warning and "z" not in warning
    assert membership.disagreement_warning(hosts[:1] + hosts[2:], 5.0) is None


def test_take_over_only_after_the_lease_and_grace() -> None:
    dead = m("a", 100.0)
    assert not membership.may_take_over(dead, 100.0)
    assert membership.may_take_over(dead, 100.5)
    assert not membership.may_take_over(dead, 100.5, grace=1.0)
    with pytest.raises(exceptions.InvalidInput, match="grace"):
        membership.may_take_over(dead, 1.0, grace=-1.0)


def test_leadership_spreads_and_moves_only_the_leaving_hosts_pools() -> None:
    hosts = [m(h, 10.0) for h in ["h1", "h2", "h3"]]
    pools = [f"pool-{i}" for i in range(60)]
    leaders = {p: membership.preferred_leader(p, hosts) for p in pools}
    counts = {h.host_id: sum(1 for v in leaders.values() if v == h.host_id) for h in hosts}
    assert all(c >= 8 for c in counts.values()), counts  # spread, not all on one host
    without_h2 = {p: membership.preferred_leader(p, [hosts[0], hosts[2]]) for p in pools}
    moved = [p for p in pools if leaders[p] != without_h2[p]]
    assert moved and all(leaders[p] == "h2" for p in moved)
    assert membership.preferred_leader("pool-0", []) is None
