"""What `corral config check` and `corral serve` refuse, in one pass (issue 8 item 15).

Each test names the breakage it catches: lax pydantic models, PyYAML's last-key-wins, a backend
that is only validated and never built, a relative store resolved from the working folder, a
missing store folder created silently.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from corral import exceptions
from corral.config import load_config, parse_config
from corral.store import url as store_url


def _problems(tmp_path: Path, text: str, name: str = "corral.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(exceptions.ConfigError) as err:
        load_config(path, env={})
    return err.value.message


def test_no_silent_coercion(tmp_path: Path) -> None:
    message = _problems(
        tmp_path,
        "pools:\n"
        "  p:\n"
        "    backend: {type: fake}\n"
        "    min_ready: true\n"
        '    max: "5"\n'
        '    reuse: {sandbox: "yes"}\n'
        '    spawn_timeout: "60"\n'
        "api: {port: '8642'}\n",
    )
    for expected in (
        "pools.p.min_ready: must be an integer, not true (a boolean)",
        "pools.p.max: must be an integer, not '5' (a string)",
        "pools.p.reuse.sandbox: must be true or false, not 'yes' (a string)",
        "pools.p.spawn_timeout: must be a number, not '60' (a string)",
        "api.port: must be an integer, not '8642' (a string)",
    ):
        assert expected in message, expected
    assert "Input should" not in message, "pydantic's words are translated"
    assert "errors.pydantic.dev" not in message


def test_numbers_and_lists_still_accepted(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(
        "pools:\n  p:\n    backend: {type: fake}\n    tags: [a, b]\n    spawn_timeout: 60\n"
        "    template: {disks: [{size_gib: 20}], nics: [{network: br0}]}\n"
    )
    pool = load_config(path, env={}).pool("p")
    assert pool.spawn_timeout == 60.0 and pool.tags == ("a", "b")
    assert pool.template.disks[0].size_gib == 20


def test_repeated_keys_are_errors(tmp_path: Path) -> None:
    message = _problems(
        tmp_path,
        "pools:\n"
        "  p:\n"
        "    backend: {type: fake}\n"
        "    max: 5\n"
        "    max: 50\n"
        "  p:\n"
        "    backend: {type: fake}\n",
    )
    assert "line 5: key 'max' repeated (first on line 4)" in message
    assert "line 6: key 'p' repeated (first on line 2)" in message


def test_yaml_merge_keys_are_not_repeats(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_text(
        "pools:\n  a: &base {backend: {type: fake}, max: 3}\n  b:\n    <<: *base\n    max: 4\n"
    )
    assert load_config(path, env={}).pool("b").max == 4


def _script(folder: Path, name: str, *, executable: bool) -> Path:
    path = folder / name
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_scripts_are_checked_naming_the_pool(tmp_path: Path) -> None:
    _script(tmp_path, "delete.sh", executable=True)
    _script(tmp_path, "plain.sh", executable=False)
    message = _problems(
        tmp_path,
        "pools:\n"
        "  missing:\n"
        "    backend: {type: script, new: [./nope.sh], delete: [./delete.sh]}\n"
        "  notexec:\n"
        "    backend: {type: script, new: [./plain.sh], delete: [./delete.sh]}\n"
        "  fine:\n"
        "    backend: {type: script, new: [./delete.sh], delete: [./delete.sh]}\n",
    )
    assert f"pools.missing.backend: script backend: new: {tmp_path.resolve()}/nope.sh" in message
    assert f"pools.notexec.backend: script backend: new: {tmp_path.resolve()}/plain.sh" in message
    assert "pools.fine" not in message


def test_every_problem_in_one_pass(tmp_path: Path) -> None:
    """A file that needed four rounds: repeated key, coercion, a missing script, a typo."""
    _script(tmp_path, "delete.sh", executable=True)
    message = _problems(
        tmp_path,
        "store: sqlite:///nowhere/x.db\n"
        "pools:\n"
        "  p:\n"
        "    backend: {type: script, new: [./nope.sh], delete: [./delete.sh]}\n"
        "    max: 3\n"
        "    max: 4\n"
        "  r:\n"
        "    backend: {type: script, new: [./gone.sh], delete: [./delete.sh]}\n"
        "    max: '2'\n"
        "  q:\n"
        "    backend: {type: fake, spawn_latncy: 1}\n"
        "    min_ready: true\n"
        "    max_prealloc: 2\n",
    )
    for expected in (
        "key 'max' repeated",
        "pools.p.backend: script backend: new:",
        "pools.q.min_ready: must be an integer",
        "pools.r.max: must be an integer",
        "pools.r.backend: script backend: new:",
        "pools.q.backend.spawn_latncy: unknown key (did you mean 'spawn_latency'?)",
        "pools.q.max_prealloc: unknown key (resalloc's max_prealloc is corral's min_ready)",
        "store: folder",
    ):
        assert expected in message, expected


@pytest.mark.parametrize(
    ("key", "hint"),
    [
        ("max_prealloc", "corral's min_ready"),
        ("livecheck_period", "livecheck: {period: SECONDS}"),
        ("reuse_opportunity_time", "reuse: {sandbox: true, idle_timeout: SECONDS}"),
        ("reuse_max_count", "reuse: {max_uses: N}"),
        ("reuse_max_time", "reuse: {max_age: SECONDS}"),
        ("cmd_new", "backend: {type: script, new: [program, args...]}"),
        ("max_startng", "did you mean 'max_starting'?"),
        ("ticket_tl", "did you mean 'ticket_ttl'?"),
    ],
)
def test_did_you_mean(key: str, hint: str) -> None:
    with pytest.raises(exceptions.ConfigError) as err:
        parse_config({"pools": {"p": {"backend": {"type": "fake"}, key: 1}}}, env={})
    assert f"pools.p.{key}: unknown key (" in err.value.message
    assert hint in err.value.message


def test_did_you_mean_in_nested_and_top_level_keys() -> None:
    with pytest.raises(exceptions.ConfigError) as err:
        parse_config(
            {"pool": {}, "pools": {"p": {"backend": {"type": "fake"}, "reuse": {"max_use": 2}}}},
            env={},
        )
    assert "pool: unknown key (did you mean 'pools'?)" in err.value.message
    assert "pools.p.reuse.max_use: unknown key (did you mean 'max_uses'?)" in err.value.message


def test_relative_sqlite_store_is_resolved_from_the_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "etc"
    (conf / "data").mkdir(parents=True)
    (conf / "corral.yaml").write_text("store: sqlite:///data/corral.db\n")
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(conf / "corral.yaml", env={})
    assert cfg.store == f"sqlite:///{conf.resolve() / 'data' / 'corral.db'}"
    # the environment's store is the operator's, relative to where they are: kept as given
    cfg = load_config(conf / "corral.yaml", env={"CORRAL_STORE": "sqlite:///here.db"})
    assert cfg.store == "sqlite:///here.db"


def test_missing_store_folder_is_refused_not_created(tmp_path: Path) -> None:
    message = _problems(tmp_path, f"store: sqlite:///{tmp_path}/no/such/dir/x.db\n")
    assert f"store: folder {tmp_path}/no/such/dir does not exist" in message
    assert not (tmp_path / "no").exists()
    with pytest.raises(exceptions.ConfigError, match="does not exist"):
        store_url.prepare(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert not (tmp_path / "no").exists(), "never created"


def test_default_store_folder_is_created(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = store_url.prepare(store_url.DEFAULT_STORE)
    assert parsed.kind == "sqlite"
    assert (tmp_path / ".corral").is_dir()
    assert store_url.prepare("memory://").kind == "memory"


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "corral.yaml"
    path.write_bytes(b"pools:\n  p:\n    tags: [caf\xe9]\n")
    with pytest.raises(exceptions.ConfigError, match=r"not UTF-8 text \(byte 0xe9 on line 3\)"):
        load_config(path, env={})


def test_tokens_must_be_sendable_in_a_header() -> None:
    with pytest.raises(exceptions.ConfigError, match="printable ASCII"):
        parse_config({"api": {"tokens": {"jeton-secr\u00e8t": {"owner": "a"}}}}, env={})


def test_probe_is_what_serve_checks(tmp_path: Path) -> None:
    """Without ``probe`` (parsing data in a program), scripts and folders are not looked at."""
    raw = {
        "store": f"sqlite:///{tmp_path}/nowhere/x.db",
        "pools": {"p": {"backend": {"type": "script", "new": ["./x"], "delete": ["./y"]}}},
    }
    assert parse_config(raw, env={}).pool("p").backend.type == "script"
    with pytest.raises(exceptions.ConfigError):
        parse_config(raw, env={}, base_dir=tmp_path, probe=True)
    assert os.listdir(tmp_path) == []
