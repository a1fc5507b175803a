"""The whole configuration: YAML, environment overrides, every problem reported with its place."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral import exceptions
from corral.config import DEFAULT_STORE, default_config, load_config, parse_config

GOOD = """
store: sqlite:///corral.db
api: {host: 0.0.0.0, port: 9000, tokens: {s3cret-token: {owner: alice, role: admin}}}
pools:
  fedora-x86:
    backend: {type: fake, spawn_latency: 0.5}
    tags: [x86_64, fedora]
    max: 20
    max_starting: 4
    min_ready: 5
    max_per_owner: 4
    livecheck: {period: 60, attempts: 3}
    reuse: {sandbox: true, max_uses: 10, max_age: 3600, idle_timeout: 120}
    spawn_timeout: 600
    ticket_ttl: 900
    template: {memory_mib: 2048, vcpus: 2, disks: [{size_gib: 20}], nics: [{network: br0}]}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "corral.yaml"
    path.write_text(text)
    return path


def test_load_good_config(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), env={})
    pool = cfg.pool("fedora-x86")
    assert cfg.store == f"sqlite:///{tmp_path.resolve() / 'corral.db'}", "relative to the file"
    assert cfg.api.port == 9000 and cfg.api.tokens["s3cret-token"].role == "admin"
    assert pool.max == 20 and pool.reuse.sandbox and pool.livecheck.attempts == 3
    assert pool.backend.type == "fake" and pool.backend.options == {"spawn_latency": 0.5}
    assert pool.template.as_mapping()["memory_mib"] == 2048
    assert cfg.base_dir == tmp_path.resolve()
    limits = pool.limits()
    assert limits.tags == {"x86_64", "fedora"} and limits.max_uses == 10
    with pytest.raises(exceptions.PoolNotFound):
        cfg.pool("nope")


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD), env={})
    with pytest.raises(Exception, match="frozen"):
        cfg.pool("fedora-x86").max = 3  # type: ignore[misc]


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "CORRAL_STORE": "postgresql://u@h/db",
        "CORRAL_API_HOST": "10.1.1.1",
        "CORRAL_API_PORT": "7000",
    }
    cfg = load_config(_write(tmp_path, GOOD), env=env)
    assert cfg.store == "postgresql://u@h/db"
    assert (cfg.api.host, cfg.api.port) == ("10.1.1.1", 7000)
    assert cfg.api.tokens  # the file's other api keys are kept


def test_every_problem_is_listed_with_its_location(tmp_path: Path) -> None:
    bad = """
store: ftp://nope
color: blue
api: {port: 70000, tokens: {short: {owner: a}}}
pools:
  fedora-x86:
    backend: {type: fake}
    max: 2
    max_starting: 4
    min_ready: 3
  broken:
    backend: {type: fake, bogus_option: 1}
    livecheck: {period: -1, when: now}
    unknown_key: 1
  Bad Name: {backend: {type: fake}}
  nobackend: {max: 1}
  nosuch: {backend: {type: does-not-exist}}
"""
    with pytest.raises(exceptions.ConfigError) as err:
        load_config(_write(tmp_path, bad), env={"CORRAL_API_PORT": "x"})
    message = err.value.message
    for expected in [
        "CORRAL_API_PORT: must be an integer",
        "color: unknown key",
        "store: store URL 'ftp://nope': unknown scheme 'ftp'",
        "api.port:",
        "api.tokens:",
        "pools.fedora-x86.max_starting: must be <= max",
        "pools.fedora-x86.min_ready: must be <= max",
        "pools.broken.livecheck.period:",
        "pools.broken.livecheck.when: unknown key",
        "pools.broken.unknown_key: unknown key",
        "pools.Bad Name: invalid pool name",
        "pools.nobackend.backend: required",
        "pools.nosuch.backend: no backend of type 'does-not-exist'",
    ]:
        assert expected in message, expected


def test_backend_options_are_checked_by_the_backend() -> None:
    with pytest.raises(exceptions.ConfigError, match=r"pools\.p\.backend\.bogus: unknown key"):
        parse_config({"pools": {"p": {"backend": {"type": "fake", "bogus": 1}}}}, env={})


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(exceptions.ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", env={})
    with pytest.raises(exceptions.ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "pools: [unclosed"), env={})
    with pytest.raises(exceptions.ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"), env={})


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, ""), env={})
    assert cfg.store == DEFAULT_STORE and cfg.pools == {} and cfg.api.port == 8642


def test_default_config_is_the_demo() -> None:
    cfg = default_config(env={})
    assert cfg.store.startswith("sqlite:///.corral/")
    (pool,) = cfg.pools.values()
    assert pool.backend.type == "fake" and pool.min_ready > 0


def test_history_setting() -> None:
    assert parse_config({"history": 3600}, env={}).history == 3600.0
    assert parse_config({"history": None}, env={}).history is None
    with pytest.raises(exceptions.ConfigError, match="history: must be > 0"):
        parse_config({"history": 0}, env={})
    with pytest.raises(exceptions.ConfigError, match="history: must be a number"):
        parse_config({"history": "long"}, env={})
