"""Cluster-wide rate limits and quotas of the cloud backends, in PostgreSQL (issue 13, SPEC §8).

When several corral hosts share one PostgreSQL store, a cloud account's ``rate`` and a pool's or
account's ``quota`` must hold for all of them together, not per process. :class:`SharedCloud`
keeps both in the store's database:

- **one token bucket row per account** (``cloud_rate_buckets``), updated by a single conditional
  ``UPDATE ... RETURNING``: the row lock serialises the hosts, and each caller reserves the next
  slot exactly as :class:`corral.backends.cloud.ratelimit.TokenBucket` does in memory, on the
  *database's* clock (so the hosts' clocks do not matter). A host's limiter takes its slots on
  the event loop (:meth:`SharedCloud.try_reserve`, in this object's own thread), one at a time
  and only when due (earlier by a head start for describes and terminates: see
  :mod:`corral.backends.cloud.ratelimit`); a throttling answer pauses the row for every host.
- **one usage row per VM counted against a quota** (``cloud_quota_usage``): an admission takes a
  transaction-scoped advisory lock on the quota's key, sums the rows, checks the limits with the
  same pure :func:`corral.backends.cloud.quota.check_quota`, and inserts its row, in one
  transaction; a confirmed terminate deletes it. The rows are durable, so a restarted host finds
  its VMs still counted.

The in-process limiter and ledgers stay in front (memory and SQLite stores have nothing else).
This module does blocking I/O: the rate-limit calls run in one thread of their own (they must not
queue behind anything else), the quota calls in a thread (``asyncio.to_thread``); nothing here
runs on the event loop. Every statement has a lock and a statement timeout, and taking a
connection a pool timeout (:data:`DB_TIMEOUT`): a database that hangs (a lock never released) is
an error the callers see, never a silent stall.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from corral.backends.cloud.quota import NOTHING, QuotaOptions, Usage, check_quota
from corral.backends.cloud.ratelimit import Slot, next_slot
from corral.store.url import parse

_LOCK_ROW = sa.text(
    "SELECT next_at, paused_until FROM cloud_rate_buckets WHERE account = :account FOR UPDATE"
)
_NOW = sa.text("SELECT extract(epoch FROM clock_timestamp())::float8")
"""Read after the row lock is held: the time the decision is made at."""
_TAKE = sa.text("UPDATE cloud_rate_buckets SET next_at = :next_at WHERE account = :account")

_CREATE_BUCKET = sa.text(
    "INSERT INTO cloud_rate_buckets (account, next_at, paused_until) VALUES (:account, 0, 0) "
    "ON CONFLICT (account) DO NOTHING"
)

_PAUSE = sa.text(
    """
    WITH clock AS (SELECT extract(epoch FROM clock_timestamp())::float8 AS now)
    UPDATE cloud_rate_buckets AS b
    SET paused_until = GREATEST(b.paused_until, clock.now + :seconds),
        next_at = GREATEST(b.next_at, clock.now + :seconds)
    FROM clock
    WHERE b.account = :account
    """
)

_LOCK = sa.text("SELECT pg_advisory_xact_lock(:lock_id)")
_USED = sa.text(
    "SELECT count(*), coalesce(sum(instances), 0), coalesce(sum(vcpus), 0), "
    "coalesce(sum(memory_mib), 0) FROM cloud_quota_usage WHERE scope_key = :key"
)
_HAS = sa.text("SELECT 1 FROM cloud_quota_usage WHERE scope_key = :key AND vm = :vm")
_ADD = sa.text(
    "INSERT INTO cloud_quota_usage (scope_key, vm, instances, vcpus, memory_mib) "
    "VALUES (:key, :vm, :instances, :vcpus, :memory_mib) ON CONFLICT DO NOTHING"
)
_REMOVE = sa.text("DELETE FROM cloud_quota_usage WHERE scope_key = :key AND vm = :vm")

LOCK_CLASS = 0x636F  # "co": keeps corral's quota locks apart from other advisory locks


def lock_id(key: str) -> int:
    """The advisory lock of a quota key: a signed 64-bit int, stable across processes."""
    return (LOCK_CLASS << 32) | zlib.crc32(key.encode())


DB_TIMEOUT = 10.0
"""Seconds a statement may wait for a lock or run, and a caller for a pooled connection."""


class SharedCloud:
    """A host's connection to the cluster-wide buckets and quota ledgers (one small pool)."""

    def __init__(self, store_url: str, *, timeout: float = DB_TIMEOUT) -> None:
        """Connect lazily to the PostgreSQL store ``store_url`` (migrated: the tables exist)."""
        ms = max(1, int(timeout * 1000))
        self.engine = sa.create_engine(
            parse(store_url).sqlalchemy_url,
            pool_size=2,
            max_overflow=8,
            pool_timeout=timeout,
            connect_args={
                "connect_timeout": max(1, round(timeout)),
                "options": f"-c lock_timeout={ms} -c statement_timeout={ms}",
            },
        )
        self._rate_thread = ThreadPoolExecutor(1, thread_name_prefix="corral-cloud-rate")

    # --- rate limits (called in SDK worker threads) ----------------------------------------

    async def try_reserve(self, account: str, rate: float, burst: float, lead: float) -> Slot:
        """Take the account's next slot if it is due within ``lead`` seconds (the limiter's
        dispatcher, on the loop; the I/O runs in this object's rate thread)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._rate_thread, self.try_reserve_sync, account, rate, burst, lead
        )

    def try_reserve_sync(self, account: str, rate: float, burst: float, lead: float) -> Slot:
        """:meth:`try_reserve`, blocking: the row locked, the slot decided as
        :meth:`corral.backends.cloud.ratelimit.TokenBucket.try_reserve` decides it, on the
        database's clock, and taken in the same transaction."""
        while True:
            with self.engine.begin() as conn:
                row = conn.execute(_LOCK_ROW, {"account": account}).first()
                if row is not None:
                    next_at, paused_until = float(row[0]), float(row[1])
                    now = float(conn.execute(_NOW).scalar_one())
                    at = time.monotonic()  # the database's "now", here (the limiter's clock)
                    horizon = next_slot(next_at, paused_until, now, rate, burst)
                    if horizon > now + lead:
                        return Slot(False, horizon - lead - now)
                    conn.execute(_TAKE, {"account": account, "next_at": horizon + 1.0 / rate})
                    return Slot(True, max(0.0, horizon - now), at)
            with self.engine.begin() as conn:  # the account's first call in this database
                conn.execute(_CREATE_BUCKET, {"account": account})

    async def pause(self, account: str, seconds: float) -> None:
        """Hold every host's calls of ``account`` back for ``seconds`` (a throttling answer)."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._rate_thread, self.pause_sync, account, seconds)

    def pause_sync(self, account: str, seconds: float) -> None:
        """Hold every host's calls of ``account`` back for ``seconds`` (a throttling answer)."""
        with self.engine.begin() as conn:
            conn.execute(_PAUSE, {"account": account, "seconds": float(seconds)})

    # --- quotas ----------------------------------------------------------------------------

    async def admit(
        self, key: str, vm: str, usage: Usage, quota: QuotaOptions, recommit: list[str]
    ) -> None:
        """Count ``recommit`` without a check, then admit ``vm`` or raise ``CapacityExceeded``
        (nothing is counted then), all in one transaction under the key's advisory lock."""
        await asyncio.to_thread(self._admit_sync, key, vm, usage, quota, recommit)

    def _admit_sync(
        self, key: str, vm: str, usage: Usage, quota: QuotaOptions, recommit: list[str]
    ) -> None:
        row = {"key": key, "instances": usage.instances, "vcpus": usage.vcpus}
        row["memory_mib"] = usage.memory_mib
        with self.engine.begin() as conn:
            conn.execute(_LOCK, {"lock_id": lock_id(key)})
            for other in recommit:
                conn.execute(_ADD, {**row, "vm": other})
            if conn.execute(_HAS, {"key": key, "vm": vm}).first() is not None:
                return  # a retried spawn: counted already
            count, instances, vcpus, memory = conn.execute(_USED, {"key": key}).one()
            committed = Usage(int(instances), int(vcpus), int(memory)) if count else NOTHING
            check_quota(quota, committed, usage, key)
            conn.execute(_ADD, {**row, "vm": vm})

    async def release(self, key: str, vm: str) -> None:
        """Stop counting ``vm`` under ``key``."""
        await asyncio.to_thread(self._release_sync, key, vm)

    def _release_sync(self, key: str, vm: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(_REMOVE, {"key": key, "vm": vm})

    def usage(self, key: str) -> Usage:
        """What is counted under ``key`` right now (blocking; statistics and tests)."""
        with self.engine.connect() as conn:
            _, instances, vcpus, memory = conn.execute(_USED, {"key": key}).one()
        return Usage(int(instances), int(vcpus), int(memory))

    def close(self) -> None:
        """Close the connections and the rate thread."""
        self._rate_thread.shutdown(wait=False)
        self.engine.dispose()


def shared_for(store_url: str) -> SharedCloud | None:
    """A :class:`SharedCloud` when ``store_url`` is PostgreSQL; ``None`` otherwise (memory and
    SQLite stores are one process: the in-process limiter and ledgers are the whole story)."""
    if parse(store_url).kind != "postgresql":
        return None
    return SharedCloud(store_url)
