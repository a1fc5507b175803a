"""Parsing of store URLs (``memory://``, ``sqlite:///path``, ``postgresql://...``).

:func:`parse` is pure: it turns a user's URL into what an implementation needs, or a clear
``ConfigError``. :func:`folder_problem` and :func:`prepare` look at the file system (one ``stat``,
and one ``mkdir`` for the default store only) so that every caller applies the same rule: the
default store's folder ``./.corral/`` is created on first use; any other SQLite store's folder
must exist, because a mistyped path would otherwise start an empty store that takes the backends'
machines for leaks. Nothing here opens a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from corral import exceptions

Kind = Literal["memory", "sqlite", "postgresql"]

DEFAULT_STORE = "sqlite:///.corral/corral.db"
"""The store used when none is configured at all: a SQLite file under the current folder."""


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


def folder_problem(url: StoreURL) -> str | None:
    """Why the database file of ``url`` cannot be created, or ``None`` (non-SQLite: ``None``).

    The default store is exempt: :func:`prepare` creates its folder.
    """
    if url.kind != "sqlite" or url.path is None or url.url == DEFAULT_STORE:
        return None
    folder = Path(url.path).parent
    if not folder.exists():
        return f"folder {folder} does not exist (create it, or fix the path)"
    if not folder.is_dir():
        return f"{folder}, the folder of the SQLite store, is not a folder"
    return None


def prepare(url: str) -> StoreURL:
    """Parse ``url`` and make sure its database can be created, before anything opens it.

    The default store (:data:`DEFAULT_STORE`) gets its folder ``./.corral/`` created; any other
    SQLite store whose folder is missing is refused with ``ConfigError``, never created.
    """
    parsed = parse(url)
    if parsed.kind == "sqlite" and parsed.url == DEFAULT_STORE and parsed.path is not None:
        Path(parsed.path).parent.mkdir(parents=True, exist_ok=True)
    problem = folder_problem(parsed)
    if problem is not None:
        raise exceptions.ConfigError(f"store {url}: {problem}")
    return parsed
