"""The one SQLAlchemy ``MetaData`` of corral's database, and the loader of every concept's tables.

Each concept declares its tables in ``corral/store/sql/schema_<concept>.py`` against
:data:`metadata`; :func:`load_metadata` imports all of them, so migrations and the schema check
see every table without this module listing them. Must not connect to anything.
"""

from __future__ import annotations

import importlib
import pkgutil

from sqlalchemy import MetaData

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""Every table corral declares (after :func:`load_metadata`)."""


def load_metadata() -> MetaData:
    """Import every ``schema_*`` module of this package and return the filled :data:`metadata`."""
    package = importlib.import_module("corral.store.sql")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("schema_"):
            importlib.import_module(f"corral.store.sql.{info.name}")
    return metadata
