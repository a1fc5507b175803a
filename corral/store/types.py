"""Value types shared by every store implementation.

This module holds plain data only; it must not import SQLAlchemy or anything that does I/O.
"""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = "bool | int | float | str | list[JSON] | dict[str, JSON] | None"
"""A JSON-serialisable value (what steps take as arguments and return as results)."""
