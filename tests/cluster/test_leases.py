"""Leadership leases with a fencing epoch: take, renew, lapse, release, stale epochs."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.cluster import leases


def test_first_take_and_renewal_keep_the_epoch() -> None:
    lease = leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=10.0)
    assert (lease.epoch, lease.holder, lease.expires_at) == (1, "h1", 10.0)
    again = leases.take(lease, "pool/a", "h1", "s1", now=5.0, duration=10.0)
    assert again.epoch == 1 and again.expires_at == 15.0
    assert leases.renew(again, "s1", now=14.0, duration=10.0).expires_at == 24.0


def test_another_session_cannot_take_a_live_lease() -> None:
    lease = leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=10.0)
    with pytest.raises(exceptions.LeaseHeld, match="h1"):
        leases.take(lease, "pool/a", "h2", "s2", now=10.0, duration=10.0)


def test_lapsed_lease_changes_hands_with_a_new_epoch_and_fences_the_old_leader() -> None:
    lease = leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=10.0)
    leases.check(lease, 1, now=9.0)
    taken = leases.take(lease, "pool/a", "h2", "s2", now=10.5, duration=10.0)
    assert taken.epoch == 2 and taken.holder == "h2"
    with pytest.raises(exceptions.StaleToken, match="epoch 1"):
        leases.check(taken, 1, now=11.0)  # the paused leader wakes up: refused
    with pytest.raises(exceptions.LeaseLost):
        leases.renew(taken, "s1", now=11.0, duration=10.0)
    back = leases.take(lease, "pool/a", "h1", "s3", now=11.0, duration=10.0)
    assert back.epoch == 2, "even the same host returning after a lapse is a new epoch"


def test_lapsed_lease_cannot_be_renewed_or_used() -> None:
    lease = leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=1.0)
    with pytest.raises(exceptions.LeaseLost):
        leases.renew(lease, "s1", now=2.0, duration=1.0)
    with pytest.raises(exceptions.StaleToken, match="lapsed"):
        leases.check(lease, 1, now=2.0)


def test_release_frees_at_once_and_only_for_its_holder() -> None:
    lease = leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=10.0)
    assert leases.release(lease, "s2") is lease
    freed = leases.release(lease, "s1")
    assert not freed.live(1.0)
    assert leases.take(freed, "pool/a", "h2", "s2", now=1.0, duration=10.0).epoch == 2


@pytest.mark.parametrize("duration", [0.0, -1.0, float("nan"), 1e9])
def test_bad_duration_is_refused(duration: float) -> None:
    with pytest.raises(exceptions.InvalidInput, match="duration"):
        leases.take(None, "pool/a", "h1", "s1", now=0.0, duration=duration)
