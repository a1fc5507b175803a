"""The idempotency keys contract, run on memory, SQLite and PostgreSQL (the ``store`` fixture)."""

from __future__ import annotations

import asyncio

from corral.store import Store, open_store


async def test_claim_get_and_expire(store: Store) -> None:
    keys = store.keys
    assert keys is not None
    assert await keys.get("alice", "k-1", now=100.0) is None
    assert await keys.claim("alice", "k-1", "t-1", now=100.0, expires_at=200.0) == "t-1"
    # a second claim of the key learns the first ticket and changes nothing
    assert await keys.claim("alice", "k-1", "t-2", now=150.0, expires_at=300.0) == "t-1"
    assert await keys.get("alice", "k-1", now=199.0) == "t-1"
    # keys are per owner
    assert await keys.get("bob", "k-1", now=100.0) is None
    assert await keys.claim("bob", "k-1", "t-3", now=100.0, expires_at=200.0) == "t-3"
    # an expired key is absent, and may be claimed again
    assert await keys.get("alice", "k-1", now=200.0) is None
    assert await keys.claim("alice", "k-1", "t-4", now=250.0, expires_at=400.0) == "t-4"
    assert await keys.get("alice", "k-1", now=300.0) == "t-4"


async def test_purge_forgets_expired_keys_only(store: Store) -> None:
    keys = store.keys
    assert keys is not None
    await keys.claim("alice", "old", "t-1", now=0.0, expires_at=10.0)
    await keys.claim("alice", "new", "t-2", now=0.0, expires_at=100.0)
    assert await keys.purge(now=50.0) == 1
    assert await keys.get("alice", "new", now=50.0) == "t-2"
    assert await keys.claim("alice", "old", "t-3", now=50.0, expires_at=90.0) == "t-3"


async def test_concurrent_claims_agree_on_one_winner(store: Store) -> None:
    keys = store.keys
    assert keys is not None
    claims = [keys.claim("alice", "race", f"t-{i}", now=0.0, expires_at=60.0) for i in range(8)]
    winners = set(await asyncio.gather(*claims))
    assert len(winners) == 1
    assert await keys.get("alice", "race", now=1.0) in winners


async def test_keys_survive_reopening(store_url: str) -> None:
    """What a server restart needs: a key claimed before is found after (memory aside)."""
    if store_url.startswith("memory"):
        return
    first = await open_store(store_url)
    try:
        assert first.keys is not None
        await first.keys.claim("alice", "k-restart", "t-9", now=0.0, expires_at=1e12)
    finally:
        await first.close()
    second = await open_store(store_url)
    try:
        assert second.keys is not None
        assert await second.keys.get("alice", "k-restart", now=1.0) == "t-9"
    finally:
        await second.close()
