"""Opening stores by URL, bad URLs, durability settings and persistence across reopen."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import exceptions
from corral.store import open_store, parse
from corral.store.tasks import InsertTask, TaskProgress, TaskRow


@pytest.mark.parametrize(
    "url",
    [
        "",
        "nothing",
        "mysql://x/y",
        "memory://extra",
        "sqlite://",
        "sqlite:///:memory:",
        "postgresql://",
    ],
)
async def test_bad_urls_are_config_errors(url: str) -> None:
    with pytest.raises(exceptions.ConfigError, match="store URL"):
        await open_store(url)


def test_postgresql_urls_map_to_psycopg3() -> None:
    assert parse("postgresql://u@h:5/db").sqlalchemy_url == "postgresql+psycopg://u@h:5/db"
    assert parse("postgres://h/db").sqlalchemy_url == "postgresql+psycopg://h/db"
    assert parse("sqlite:////abs/c.db").path == "/abs/c.db"


async def test_sqlite_uses_wal_and_normal_sync_and_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    store = await open_store(url)
    row = TaskRow("a", "v", "", "low", "auto", "auto", "manual", "{}", "[]", 1.0,
                  TaskProgress("preparing", 0, "", "", "null", 1.0))  # fmt: skip
    await store.tasks.apply([InsertTask(row)])
    executor = store.tasks._executor  # type: ignore[attr-defined]
    modes = await executor.run(
        lambda c: (
            c.exec_driver_sql("PRAGMA journal_mode").scalar(),
            c.exec_driver_sql("PRAGMA synchronous").scalar(),
        )
    )
    assert modes == ("wal", 1)  # 1 = NORMAL
    await store.close()
    await store.close()  # idempotent
    with pytest.raises(exceptions.StoreError, match="closed"):
        await store.tasks.get("a")
    again = await open_store(url)
    try:
        got = await again.tasks.get("a")
        assert got is not None and got.row == row
    finally:
        await again.close()


async def test_unreachable_databases_are_store_errors(tmp_path: Path) -> None:
    with pytest.raises(exceptions.StoreError, match="store"):
        await open_store(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'c.db'}")
    with pytest.raises(exceptions.StoreError):
        await open_store("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
