"""The schema's newest revision, read from the migration files without importing Alembic.

Opening a store whose schema is already current (every start but the first after an upgrade)
then costs one ``SELECT`` of ``alembic_version`` instead of importing and running Alembic, which
takes a large part of ``corral serve``'s start-up. Migrations themselves still run through
Alembic (:mod:`corral.store.migrate`); a test checks that :func:`head` agrees with Alembic's.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from sqlalchemy import Connection, inspect, text

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_REVISION = re.compile(r'^revision\s*=\s*"([^"]+)"', re.M)
_DOWN = re.compile(r'^down_revision\s*=\s*(?:"([^"]+)"|None)', re.M)


@functools.cache
def head() -> str | None:
    """The revision no migration revises (``None`` when there is not exactly one such head)."""
    revisions: set[str] = set()
    revised: set[str] = set()
    for path in VERSIONS.glob("*.py"):
        source = path.read_text(encoding="utf-8")
        found, down = _REVISION.search(source), _DOWN.search(source)
        if found is None or down is None:
            return None  # not a migration file we understand: let Alembic decide
        revisions.add(found.group(1))
        if down.group(1):
            revised.add(down.group(1))
    heads = revisions - revised
    return next(iter(heads)) if len(heads) == 1 else None


def is_current(connection: Connection) -> bool:
    """Whether the database behind ``connection`` is at :func:`head` (no migration to run)."""
    wanted = head()
    if wanted is None:
        return False
    if not inspect(connection).has_table("alembic_version"):
        return False  # a new database: migrate
    rows = connection.execute(text("SELECT version_num FROM alembic_version")).all()
    return [r[0] for r in rows] == [wanted]
