"""Resource keys, modes, owners and timeouts are validated as SPEC §3 says."""

from __future__ import annotations

import pytest

from corral import exceptions
from corral.locks import keys


@pytest.mark.parametrize(
    "key",
    [
        "vm/fedora-x86-0007",
        "pool/fedora-x86",
        "a/b",
        "n_s-1/x y/z",
        "a" + "b" * 63 + "/" + "n" * 255,
    ],
)
def test_valid_keys(key: str) -> None:
    assert keys.validate_key(key) == key
    assert keys.key_tuple(key) == (key,)


@pytest.mark.parametrize(
    "key",
    [
        "",
        "vm",
        "/a",
        "Vm/a",
        "1vm/a",
        "v.m/a",
        "a" * 65 + "/x",
        "vm/",
        "vm/a\tb",
        "vm/\x00",
        "vm/" + "n" * 256,
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(exceptions.InvalidResourceKey):
        keys.validate_key(key)


def test_str_subclass_is_cached_as_plain_str() -> None:
    class Key(str):
        pass

    assert type(keys.validate_key(Key("vm/sub"))) is str


def test_modes_owners_timeouts() -> None:
    assert keys.validate_mode("shared") is keys.Mode.SHARED
    assert keys.validate_mode(keys.Mode.EXCLUSIVE) is keys.Mode.EXCLUSIVE
    for bad_mode in ("SHARED", None, ["shared"]):
        with pytest.raises(exceptions.InvalidInput):
            keys.validate_mode(bad_mode)
    assert keys.validate_owner("task-1") == "task-1"
    for bad_owner in ("", "x" * 256, "a\nb", None):
        with pytest.raises(exceptions.InvalidInput):
            keys.validate_owner(bad_owner)
    assert keys.validate_timeout(0.25) == 0.25, "sub-second timeouts are kept"
    assert keys.validate_timeout(2) == 2.0
    assert keys.validate_timeout(float("inf")) is None
    for bad_timeout in (-0.1, float("nan"), True, "1"):
        with pytest.raises(exceptions.InvalidInput):
            keys.validate_timeout(bad_timeout)


def test_normalize_dedupes_and_sorts() -> None:
    ordered, modes = keys.normalize_request(
        ("vm/b", ("vm/a", "shared"), {"vm/c": "exclusive"}, "vm/b"), "exclusive"
    )
    assert ordered == ("vm/a", "vm/b", "vm/c")
    assert modes == (keys.Mode.SHARED, keys.Mode.EXCLUSIVE, keys.Mode.EXCLUSIVE)
    with pytest.raises(exceptions.InvalidInput, match="two modes"):
        keys.normalize_request(("vm/a", ("vm/a", "shared")), "exclusive")
    with pytest.raises(exceptions.InvalidInput):
        keys.normalize_request((["vm/a"],), "exclusive")
