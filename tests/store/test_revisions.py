"""The schema's head read from the migration files agrees with Alembic's, and a current store
opens without running (or importing) Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from corral.store import migrate, revisions


def test_head_from_the_files_is_alembics_head() -> None:
    assert revisions.head() == migrate.head()


def test_a_current_store_opens_without_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/c.db"
    migrate.upgrade(url)
    code = (
        "import asyncio, sys\n"
        "from corral.store import open_store\n"
        "async def main():\n"
        f"    store = await open_store({url!r})\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
        "print('alembic' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


async def test_a_new_store_is_still_migrated(tmp_path: Path) -> None:
    from corral.store import open_store

    store = await open_store(f"sqlite:///{tmp_path}/n.db")
    try:
        assert await store.pools.list_tickets() == []
    finally:
        await store.close()
