"""Connection details: how to reach a VM beyond its address (user, port, key, host key...).

A backend may return them with the VM (resalloc's ``new`` scripts can print more than an
address); they travel in the VM's :class:`~corral.backends.base.Handle` (so they are stored with
the VM, in the handle the store keeps), and the API shows them on the VM and on the ticket holding
it. This module is pure: it checks details and reads the script backend's ``new`` output.

The script backend's protocol (``docs/backends.md``): ``new`` prints either

- the address on its first line, then optionally lines ``connection: {JSON object}`` anywhere
  after it (other lines are ignored, as before); or
- one JSON object on its whole stdout: ``{"address": "10.0.0.7", "user": "root", "port": 22}``:
  ``address`` is the address, every other key a detail.

Keys are short lower-case names; values are strings, integers or booleans (kept as text).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

from corral import exceptions

Details = tuple[tuple[str, str], ...]
"""Connection details as sorted ``(key, value)`` pairs (hashable, for frozen dataclasses)."""

MAX_KEYS = 16
"""Details one VM may have at most."""

MAX_VALUE = 8192
"""Characters of one value at most (a private key fits)."""

KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
"""What a detail's key looks like: ``user``, ``port``, ``host_key``, ``ssh_key``..."""

LINE_PREFIX = "connection:"
"""How a line of ``new``'s stdout carrying details begins."""


def check(details: Mapping[str, object], *, what: str = "connection details") -> Details:
    """``details`` as sorted pairs; ``InvalidInput`` naming the first wrong key or value."""
    if len(details) > MAX_KEYS:
        raise exceptions.InvalidInput(f"{what}: at most {MAX_KEYS} keys, not {len(details)}")
    pairs: list[tuple[str, str]] = []
    for key, value in details.items():
        if not isinstance(key, str) or not KEY.fullmatch(key):
            raise exceptions.InvalidInput(
                f"{what}: key {str(key)[:40]!r} must be lower-case letters, digits and '_' "
                "(at most 32, starting with a letter)"
            )
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, int | str):
            text = str(value)
        else:
            raise exceptions.InvalidInput(
                f"{what}: {key!r} must be a string, an integer or a boolean, "
                f"not {type(value).__name__}"
            )
        if len(text) > MAX_VALUE:
            raise exceptions.InvalidInput(f"{what}: {key!r} is longer than {MAX_VALUE} chars")
        pairs.append((key, text))
    return tuple(sorted(pairs))


def _object(text: str, what: str) -> dict[str, object]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise exceptions.InvalidInput(f"{what}: not JSON: {text[:100]!r}") from exc
    if not isinstance(data, dict):
        raise exceptions.InvalidInput(f"{what}: must be a JSON object, not {text[:100]!r}")
    return data


def parse_new_output(stdout: str) -> tuple[str, Details]:
    """The address and the connection details in what a script's ``new`` printed (see the
    module docstring); the address is not checked here. ``InvalidInput`` for malformed
    details."""
    text = stdout.strip()
    if text.startswith("{"):
        data = _object(text, "new's JSON output")
        address = data.pop("address", None)
        if not isinstance(address, str):
            raise exceptions.InvalidInput("new's JSON output: 'address' must be a string")
        return address.strip(), check(data, what="new's JSON output")
    lines = stdout.splitlines()
    address = lines[0].strip() if lines else ""
    found: dict[str, object] = {}
    for number, line in enumerate(lines[1:], start=2):
        if line.startswith(LINE_PREFIX):
            what = f"new's stdout line {number}"
            found.update(_object(line[len(LINE_PREFIX) :].strip(), what))
    return address, check(found, what="new's connection lines")


def from_handle(handle: str | None) -> dict[str, str]:
    """The details kept in a stored handle's JSON (``{}`` for none, or for a handle that is not
    readable: the details are shown, never needed to operate a VM)."""
    if not handle:
        return {}
    try:
        data = json.loads(handle)
    except ValueError:
        return {}
    details = data.get("connection") if isinstance(data, dict) else None
    if not isinstance(details, dict):
        return {}
    return {str(k): str(v) for k, v in details.items()}
