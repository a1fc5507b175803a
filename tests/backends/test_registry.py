"""The entry-point registry, option validation, and the interface's value types."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest

from corral import backends, exceptions
from corral.backends import (
    backend_class,
    installed_backends,
    load_backend,
    validate_options,
)
from corral.backends.base import Handle, is_valid_address
from corral.backends.fake import FakeBackend, FakeOptions
from corral.backends.script import ScriptBackend


def test_builtin_backends_are_installed_by_entry_point() -> None:
    assert {"fake", "script"} <= set(installed_backends())
    assert backend_class("fake") is FakeBackend
    assert backend_class("script") is ScriptBackend


def test_unknown_type_lists_the_installed_ones() -> None:
    with pytest.raises(exceptions.BackendNotFound, match=r"'vmware'.*installed: .*fake.*script"):
        load_backend("vmware", {}, pool="p")


def test_entry_point_that_is_not_a_backend_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    bogus = importlib.metadata.EntryPoint(
        name="bogus", value="corral.exceptions:CorralError", group="corral.backends"
    )
    # the registry's own seam, not importlib.metadata.entry_points: that one is process-wide,
    # and a patch of it would be seen by every other thread (and library) of the test process
    real = backends._entry_points
    monkeypatch.setattr(backends, "_entry_points", lambda: [*real(), bogus])
    with pytest.raises(exceptions.BackendNotFound, match="not a corral Backend class"):
        backend_class("bogus")


def test_entry_point_that_cannot_be_imported_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = importlib.metadata.EntryPoint(
        name="libvirt", value="corral_no_such_module:Backend", group="corral.backends"
    )
    real = [e for e in backends._entry_points() if e.name != "libvirt"]
    monkeypatch.setattr(backends, "_entry_points", lambda: [*real, broken])
    with pytest.raises(exceptions.BackendNotFound, match=r"pip install 'corral\[libvirt\]'"):
        backend_class("libvirt")


def test_validate_options_accepts_the_whole_backend_mapping() -> None:
    options = validate_options("fake", {"type": "fake", "seed": 3})
    assert isinstance(options, FakeOptions) and options.seed == 3


def test_mismatched_type_key_is_an_error() -> None:
    with pytest.raises(exceptions.ConfigError, match="type: 'script' does not match 'fake'"):
        validate_options("fake", {"type": "script"})


def test_every_bad_key_is_named() -> None:
    with pytest.raises(exceptions.ConfigError) as info:
        validate_options("fake", {"sede": 1, "hang_rate": 2, "spawn_latency": "slow"})
    message = info.value.message
    assert "sede: unknown option" in message
    assert "hang_rate: Input should be less than or equal to 1" in message
    assert "spawn_latency" in message and "allowed options:" in message


def test_options_are_frozen() -> None:
    options = validate_options("fake", {})
    with pytest.raises(ValueError, match="frozen"):
        options.seed = 4  # type: ignore[misc]


def test_load_backend_binds_pool_and_base_dir(tmp_path: Path) -> None:
    backend = load_backend("fake", {}, pool="fedora", base_dir=tmp_path)
    assert backend.pool == "fedora" and backend.base_dir == tmp_path


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[]",
        '{"ref": "x"}',
        '{"name": ""}',
        '{"name": "a", "ref": 3}',
        '{"name": "a", "extra": 1}',
    ],
)
def test_bad_handle_json_is_invalid_input(text: str) -> None:
    with pytest.raises(exceptions.InvalidInput):
        Handle.from_json(text)


def test_handle_json_defaults_ref() -> None:
    assert Handle.from_json('{"name": "a"}') == Handle("a")


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("10.0.0.1", True),
        ("::1", True),
        ("fe80::1", True),
        ("vm-1.example.com", True),
        ("vm-1.example.com.", True),
        ("localhost", True),
        ("", False),
        (" 10.0.0.1", False),
        ("300.1.2.3", False),
        ("1.2.3", False),
        ("-vm", False),
        ("vm_1", False),
        ("a b", False),
        ("x" * 64, False),
        ("a." * 130, False),
        ("<<not an address>>", False),
    ],
)
def test_address_validation(text: str, valid: bool) -> None:
    assert is_valid_address(text) is valid
