"""A separate process holding PostgreSQL locks, for the cross-process tests (not a test module).

``python pg_worker.py URL HOST KEY LEASE HOLD``: acquire ``KEY`` exclusively as owner ``HOST``,
print ``queued`` when it has to wait and ``granted <token>`` when granted, hold it ``HOLD``
seconds (``forever``: until killed), release, print ``released``.
"""

from __future__ import annotations

import asyncio
import sys

from corral.locks.pg import PgLockManager


async def main(url: str, host: str, key: str, lease: float, hold: str) -> None:
    async with PgLockManager(url, host_id=host, lease=lease) as locks:
        print("started", flush=True)
        req = locks.acquire(key, owner=host, on_wait=lambda: print("queued", flush=True))
        async with req as held:
            print(f"granted {held.token(key)}", flush=True)
            if hold == "forever":
                await asyncio.Event().wait()
            await asyncio.sleep(float(hold))
        print("released", flush=True)


if __name__ == "__main__":
    url, host, key, lease, hold = sys.argv[1:6]
    asyncio.run(main(url, host, key, float(lease), hold))
