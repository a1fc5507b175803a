"""Bounds of the per-pool key/value info (Copr's ``write_vm_pool_info``/``read_vm_pool_info``).

Pure checks; the controller stores what passes (``Controller.set_pool_info``). This module must
not touch the store.
"""

from __future__ import annotations

import json
import re

from corral import exceptions
from corral.types import JSON

KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
"""A key: 1-64 letters, digits and ``_.:-``."""
VALUE_LIMIT = 16 * 1024
"""Bytes of a value's JSON text at most."""
KEYS_LIMIT = 100
"""Keys per pool at most."""


def check_key(key: object) -> str:
    """``key`` if it is a valid info key, else ``InvalidInput`` naming the rule."""
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise exceptions.InvalidInput(
            f"info key {str(key)[:80]!r} must be 1 to 64 letters, digits, '_', '.', ':' or '-'"
        )
    return key


def encode(value: JSON) -> str:
    """``value`` as the JSON text the store keeps (``InvalidInput`` when it is not JSON or is
    longer than :data:`VALUE_LIMIT` bytes)."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise exceptions.InvalidInput(f"info value is not JSON: {exc}") from exc
    if len(text.encode()) > VALUE_LIMIT:
        raise exceptions.InvalidInput(
            f"info value is {len(text.encode())} bytes of JSON, more than {VALUE_LIMIT}"
        )
    return text


def check_room(existing: set[str], key: str) -> None:
    """``InvalidInput`` when adding ``key`` would give the pool more than :data:`KEYS_LIMIT`."""
    if key not in existing and len(existing) >= KEYS_LIMIT:
        raise exceptions.InvalidInput(
            f"the pool already has {len(existing)} info keys, the most it may have: delete one"
        )
