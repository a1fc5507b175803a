"""Bearer-token authentication and the authorisation rules of SPEC §7.

Tokens come from the config, each mapped to an owner and a role (``user`` or ``admin``). A token is
compared with every configured token in constant time (:func:`hmac.compare_digest` over SHA-256
digests, all of them, so neither the match position nor the token length shows in the timing).
With no tokens configured the server is open (every caller is an admin) and must bind to loopback.

This module must never log, print or echo a token, and must not talk to the controller.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from corral import exceptions

ANONYMOUS = "anonymous"
"""The owner of tickets created on an open server (no tokens) without an explicit owner."""


class Role(StrEnum):
    """What a token may do: ``user`` handles its own tickets, ``admin`` everything."""

    USER = "user"
    ADMIN = "admin"


class TokenSpec(Protocol):
    """What the config says about one token (``api.tokens.<token>``)."""

    @property
    def owner(self) -> str:
        """The owner the token acts as."""

    @property
    def role(self) -> str:
        """``user`` or ``admin``."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the owner its tickets belong to (``None`` on an open server) and its role."""

    owner: str | None
    role: Role

    @property
    def admin(self) -> bool:
        """True when the caller may do pool, VM and task operations."""
        return self.role is Role.ADMIN

    def require_admin(self, what: str) -> None:
        """Raise :class:`Forbidden` unless the caller is an admin."""
        if not self.admin:
            raise exceptions.Forbidden(f"{what} needs an admin token")

    def ticket_owner(self, requested: str | None) -> str:
        """The owner a new ticket gets: the token's owner; admins may name another one."""
        if self.owner is None:
            return requested or ANONYMOUS
        if requested is None or requested == self.owner:
            return self.owner
        if self.admin:
            return requested
        raise exceptions.Forbidden(
            f"a user token may only act as its own owner {self.owner!r}, not {requested!r}"
        )

    @property
    def sees_all(self) -> bool:
        """True when the caller may see and close the tickets of every owner."""
        return self.admin or self.owner is None

    def may_see(self, owner: str) -> bool:
        """True when the caller may see and close tickets of ``owner``."""
        return self.sees_all or self.owner == owner


OPEN = Principal(owner=None, role=Role.ADMIN)
"""The caller on a server with no tokens configured."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class Authenticator:
    """Turns an ``Authorization`` header into a :class:`Principal` (or refuses it)."""

    def __init__(self, tokens: Mapping[str, TokenSpec]) -> None:
        entries: list[tuple[bytes, Principal]] = []
        for token, spec in tokens.items():
            try:
                role = Role(str(spec.role))
            except ValueError:
                raise exceptions.ConfigError(
                    f"api.tokens: role of owner {spec.owner!r} must be 'user' or 'admin',"
                    f" not {spec.role!r}"
                ) from None
            entries.append((_digest(token), Principal(owner=spec.owner, role=role)))
        self._entries = tuple(entries)

    @property
    def open(self) -> bool:
        """True when no tokens are configured: anyone may do anything (loopback only)."""
        return not self._entries

    def authenticate(self, authorization: str | None) -> Principal:
        """The caller behind an ``Authorization: Bearer <token>`` header."""
        if self.open:
            return OPEN
        if not authorization:
            raise exceptions.Unauthorized("this server needs an 'Authorization: Bearer' token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.Unauthorized("the Authorization header must be 'Bearer <token>'")
        digest = _digest(token.strip())
        found: Principal | None = None
        for candidate, principal in self._entries:
            # No early exit: every configured token is compared, whatever matches.
            if hmac.compare_digest(candidate, digest):
                found = principal
        if found is None:
            raise exceptions.Unauthorized("the bearer token is not valid")
        return found
