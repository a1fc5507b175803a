"""The pure parts of auth and serving: token lookup, ownership rules, where to listen."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from corral import exceptions
from corral.api.auth import ANONYMOUS, OPEN, Authenticator, Principal, Role
from corral.api.errors import validation_message
from corral.api.server import is_loopback, listen_host
from corral.config import parse_config


@dataclass(frozen=True)
class Spec:
    owner: str
    role: str


TOKENS = {"t-alice-123": Spec("alice", "user"), "t-root-1234": Spec("root", "admin")}


def test_tokens_map_to_principals() -> None:
    auth = Authenticator(TOKENS)
    assert not auth.open
    assert auth.authenticate("Bearer t-alice-123") == Principal("alice", Role.USER)
    assert auth.authenticate("bearer  t-root-1234 ") == Principal("root", Role.ADMIN)
    for header in [None, "", "Bearer", "Bearer  ", "Basic t-alice-123", "t-alice-123"]:
        with pytest.raises(exceptions.Unauthorized):
            auth.authenticate(header)
    with pytest.raises(exceptions.Unauthorized) as info:
        auth.authenticate("Bearer t-alice-12")  # a prefix of a real token
    assert "t-alice" not in str(info.value), "the token is never echoed"


def test_no_tokens_means_open() -> None:
    auth = Authenticator({})
    assert auth.open
    assert auth.authenticate(None) is OPEN
    assert OPEN.ticket_owner(None) == ANONYMOUS
    assert OPEN.ticket_owner("bob") == "bob"


def test_bad_role_is_a_config_error() -> None:
    with pytest.raises(exceptions.ConfigError, match="role"):
        Authenticator({"t-x-123456": Spec("x", "root")})


def test_ownership_rules() -> None:
    alice = Principal("alice", Role.USER)
    root = Principal("root", Role.ADMIN)
    assert alice.ticket_owner(None) == "alice"
    assert alice.ticket_owner("alice") == "alice"
    with pytest.raises(exceptions.Forbidden):
        alice.ticket_owner("bob")
    assert root.ticket_owner("bob") == "bob"
    assert alice.may_see("alice") and not alice.may_see("bob")
    assert root.may_see("bob")
    with pytest.raises(exceptions.Forbidden):
        alice.require_admin("terminating VMs")
    root.require_admin("terminating VMs")


def test_listen_host_without_tokens_is_loopback() -> None:
    open_config = parse_config({}, env={})
    host, notice = listen_host(open_config, "127.0.0.1")
    assert host == "127.0.0.1"
    assert notice is not None and "loopback" not in notice and "127.0.0.1 only" in notice
    assert listen_host(open_config, "localhost")[0] == "localhost"
    host, notice = listen_host(open_config, "0.0.0.0")  # noqa: S104 - what we refuse
    assert host == "127.0.0.1"
    assert notice is not None and "not 0.0.0.0" in notice
    with_tokens = parse_config(
        {"api": {"tokens": {"t-root-1234": {"owner": "root", "role": "admin"}}}}, env={}
    )
    assert listen_host(with_tokens, "0.0.0.0") == ("0.0.0.0", None)  # noqa: S104
    assert is_loopback("::1") and not is_loopback("10.0.0.1") and not is_loopback("example")


def test_validation_message_names_fields() -> None:
    message = validation_message(
        [
            {"loc": ("body", "ttl"), "msg": "Input should be greater than 0"},
            {"loc": ("query", "wait"), "msg": "Input should be a valid number"},
            {"loc": ("body",), "msg": "Field required"},
        ]
    )
    assert "body field 'ttl': Input should be greater than 0" in message
    assert "query field 'wait'" in message
    assert "request body: Field required" in message
