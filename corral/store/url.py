"""Parsing of store URLs (``memory://``, ``sqlite:///path``, ``postgresql://...``).

Pure: turns a user's URL into what an implementation needs, or a clear ``ConfigError``. It must
not open anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from corral import exceptions

Kind = Literal["memory", "sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A validated store URL: its kind and the SQLAlchemy URL to connect with (SQL kinds)."""

    kind: Kind
    url: str
    sqlalchemy_url: str
    path: str | None = None
    """The database file of a SQLite URL."""


def parse(url: str) -> StoreURL:
    """Validate ``url`` and say which implementation serves it.

    ``postgresql://`` and ``postgres://`` map to SQLAlchemy's ``postgresql+psycopg://``
    (psycopg 3); ``sqlite:///relative`` and ``sqlite:////absolute`` name a file.
    """
    if not isinstance(url, str) or not url:
        raise exceptions.ConfigError("store URL must be a non-empty string")
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise exceptions.ConfigError(
            f"store URL {url!r} has no scheme (memory://, sqlite:///path, postgresql://...)"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise exceptions.ConfigError(
                f"store URL {url!r}: memory:// takes nothing after the scheme"
            )
        return StoreURL(kind="memory", url=url, sqlalchemy_url="")
    if scheme in ("sqlite", "sqlite+pysqlite"):
        if not rest.startswith("/") or rest in ("/", "/:memory:") or "?" in rest:
            raise exceptions.ConfigError(
                f"store URL {url!r}: SQLite needs a file, sqlite:///relative/path or sqlite:////abs/path"
            )
        path = rest[1:]
        return StoreURL(
            kind="sqlite", url=url, sqlalchemy_url=f"sqlite+pysqlite:///{path}", path=path
        )
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        if not rest:
            raise exceptions.ConfigError(
                f"store URL {url!r}: PostgreSQL needs a host or a database"
            )
        return StoreURL(kind="postgresql", url=url, sqlalchemy_url=f"postgresql+psycopg://{rest}")
    raise exceptions.ConfigError(
        f"store URL {url!r}: unknown scheme {scheme!r} (memory://, sqlite:///path, postgresql://...)"
    )
