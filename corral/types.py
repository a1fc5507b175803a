"""Small shared type aliases; nothing here may import from the rest of the package."""

from __future__ import annotations

from typing import TypeAlias

JSON: TypeAlias = dict[str, "JSON"] | list["JSON"] | str | int | float | bool | None
"""A JSON-serialisable value (task step arguments and results, info values)."""
