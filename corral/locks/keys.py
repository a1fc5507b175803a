"""Validation of everything a caller hands the lock manager: keys, modes, owners, timeouts.

Resource keys follow SPEC §3: ``namespace/name``, the namespace matching
``[a-z][a-z0-9_-]{0,63}``, the name 1-255 printable characters. Valid keys are remembered in a
bounded cache so the hot path pays one dict lookup. Every rejection is a
:class:`~corral.exceptions.CorralError` naming what is wrong.

This module must not hold any lock state; it only checks and normalises values.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping

from corral import exceptions


class Mode(enum.StrEnum):
    """A lock mode: shared is compatible with shared; exclusive with nothing."""

    SHARED = "shared"
    EXCLUSIVE = "exclusive"


SHARED = Mode.SHARED
EXCLUSIVE = Mode.EXCLUSIVE

# StrEnum members hash and compare like their values, so one lookup accepts both spellings.
_MODES: dict[object, Mode] = {"shared": SHARED, "exclusive": EXCLUSIVE}

_NAMESPACE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_MAX_NAME = 255
_MAX_OWNER = 255
_CACHE_LIMIT = 65536

# Valid key -> the one-element tuple of it, which is what a single-key acquire needs anyway;
# and the same keyed by that tuple, so that acquire("vm/a", ...) checks its *keys in one lookup.
_valid_keys: dict[str, tuple[str]] = {}
valid_singles: dict[tuple[str], tuple[str]] = {}
valid_owners: dict[str, None] = {}


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid resource key, else raise ``InvalidResourceKey``."""
    if type(key) is str and key in _valid_keys:
        return key
    return _check_key(key)[0]


def key_tuple(key: object) -> tuple[str]:
    """``(key,)`` for a valid key (cached), else raise ``InvalidResourceKey``."""
    if type(key) is str:
        cached = _valid_keys.get(key)
        if cached is not None:
            return cached
    return _check_key(key)


def _check_key(key: object) -> tuple[str]:
    if not isinstance(key, str):
        raise exceptions.InvalidResourceKey(
            f"resource key must be a string 'namespace/name', got {type(key).__name__}"
        )
    namespace, slash, name = key.partition("/")
    if not slash:
        raise exceptions.InvalidResourceKey(
            f"resource key {key!r} is not of the form namespace/name"
        )
    if _NAMESPACE.fullmatch(namespace) is None:
        raise exceptions.InvalidResourceKey(
            f"namespace {namespace!r} of resource key {key!r} must match [a-z][a-z0-9_-]{{0,63}}"
        )
    if not name:
        raise exceptions.InvalidResourceKey(f"resource key {key!r} has an empty name")
    if len(name) > _MAX_NAME:
        raise exceptions.InvalidResourceKey(
            f"name of resource key {key[:40]!r}... is {len(name)} characters long (at most 255)"
        )
    if not name.isprintable():
        raise exceptions.InvalidResourceKey(
            f"name of resource key {key!r} contains control or non-printable characters"
        )
    if len(_valid_keys) >= _CACHE_LIMIT:
        _valid_keys.clear()
        valid_singles.clear()
    key = str(key)  # a str subclass must not end up in the cache
    one = (key,)
    _valid_keys[key] = one
    valid_singles[one] = one
    return one


def namespace_of(key: str) -> str:
    """The namespace part of a (valid) resource key."""
    return key.partition("/")[0]


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it matches ``[a-z][a-z0-9_-]{0,63}``, else raise ``InvalidInput``."""
    if not isinstance(namespace, str) or _NAMESPACE.fullmatch(namespace) is None:
        raise exceptions.InvalidInput(
            f"namespace {namespace!r} must be a string matching [a-z][a-z0-9_-]{{0,63}}"
        )
    return namespace


def validate_mode(mode: object) -> Mode:
    """``Mode`` for ``"shared"``/``"exclusive"`` (or a ``Mode``), else raise ``InvalidInput``."""
    try:
        found = _MODES.get(mode)
    except TypeError:
        found = None
    if found is None:
        raise exceptions.InvalidInput(f"lock mode must be 'shared' or 'exclusive', got {mode!r}")
    return found


def validate_owner(owner: object) -> str:
    """Return ``owner`` if it is a non-empty printable string of at most 255 characters."""
    if type(owner) is str and 0 < len(owner) <= _MAX_OWNER and owner.isprintable():
        if len(valid_owners) >= _CACHE_LIMIT:
            valid_owners.clear()
        valid_owners[owner] = None
        return owner
    if not isinstance(owner, str):
        raise exceptions.InvalidInput(
            f"lock owner must be a string (a task id, ticket id...), got {type(owner).__name__}"
        )
    if not owner:
        raise exceptions.InvalidInput("lock owner must not be empty")
    if len(owner) > _MAX_OWNER:
        raise exceptions.InvalidInput(f"lock owner is {len(owner)} characters long (at most 255)")
    if not owner.isprintable():
        raise exceptions.InvalidInput(f"lock owner {owner!r} contains non-printable characters")
    return str(owner)


def validate_timeout(timeout: object) -> float | None:
    """Seconds as a float (``None`` or ``inf``: forever); negative or NaN is ``InvalidInput``."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise exceptions.InvalidInput(
            f"lock timeout must be a number of seconds or None, got {type(timeout).__name__}"
        )
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise exceptions.InvalidInput(f"lock timeout must be >= 0 seconds, got {timeout!r}")
    if math.isinf(value):
        return None
    return value


def normalize_request(
    keys: tuple[object, ...], mode: object
) -> tuple[tuple[str, ...], tuple[Mode, ...]]:
    """Validate the keys of one acquire call: dedupe, sort, and resolve the mode of each key.

    Each element of ``keys`` is a key (in ``mode``), a ``(key, mode)`` pair, or a mapping of keys
    to modes. Asking for one key in two modes is ``InvalidInput``.
    """
    default = validate_mode(mode)
    if len(keys) == 1 and type(keys[0]) is str:
        return key_tuple(keys[0]), _ONE[default]
    wanted: dict[str, Mode] = {}
    for item in keys:
        if isinstance(item, str):
            _want(wanted, validate_key(item), default)
        elif isinstance(item, tuple) and len(item) == 2:
            _want(wanted, validate_key(item[0]), validate_mode(item[1]))
        elif isinstance(item, Mapping):
            for key, key_mode in item.items():
                _want(wanted, validate_key(key), validate_mode(key_mode))
        else:
            raise exceptions.InvalidInput(
                "acquire() takes keys, (key, mode) pairs or a mapping of keys to modes, "
                f"got {type(item).__name__}"
            )
    if not wanted:
        raise exceptions.InvalidInput("acquire() needs at least one resource key")
    ordered = tuple(sorted(wanted))
    return ordered, tuple(wanted[key] for key in ordered)


_ONE: dict[Mode, tuple[Mode]] = {SHARED: (SHARED,), EXCLUSIVE: (EXCLUSIVE,)}


def _want(wanted: dict[str, Mode], key: str, mode: Mode) -> None:
    previous = wanted.setdefault(key, mode)
    if previous is not mode:
        raise exceptions.InvalidInput(
            f"resource {key!r} is asked for in two modes ({previous}, {mode})"
        )
