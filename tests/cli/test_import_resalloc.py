"""``corral import-resalloc pools.yaml`` (issue 12, Maintenance).

What each test catches: a resalloc key mapped to the wrong corral setting (max_prealloc is
min_ready, livecheck_period is livecheck.period, the reuse keys), resalloc's defaults not
carried over for absent keys (the pools would behave differently), a shell command run
without a shell, a key without an equivalent dropped silently, a result corral refuses, an
existing file overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

from corral.cli import resalloc
from corral.cli.main import app
from corral.cli.output import Exit
from corral.config import parse_config

runner = CliRunner()

POOLS = """
copr_hv_x86_64_01_prod:
    description: x86_64 builders on AWS
    max: 20
    max_starting: 4
    max_prealloc: 8
    start_delay: 30
    cmd_new: '/var/lib/resallocserver/resalloc_provision/vm-aws-new --arch x86_64'
    cmd_delete: "/var/lib/resallocserver/provision/vm-delete \\"$RESALLOC_NAME\\""
    cmd_livecheck: "resalloc-check-vm-ip"
    cmd_list: /usr/bin/resalloc-aws-list
    livecheck_period: 180
    reuse_opportunity_time: 90
    reuse_max_count: 8
    reuse_max_time: 1800
    tags:
      - copr_builder
      - name: arch_x86_64
        priority: 10
    name_pattern: "{pool_name}_{id:08d}_{datetime}"

copr_ondemand:
    cmd_new: /bin/new
    tags_on_demand:
      - beefy

nodelete:
    cmd_new: /bin/new
    unknown_thing: 1
"""


def run(*args: str) -> Any:
    return runner.invoke(app, list(args))


def test_convert_maps_every_key_and_keeps_resalloc_defaults() -> None:
    imported = resalloc.convert(yaml.safe_load(POOLS))
    pools: Any = imported.config["pools"]
    prod = pools["copr_hv_x86_64_01_prod"]
    assert prod["backend"] == {
        "type": "script",
        "new": [
            "/var/lib/resallocserver/resalloc_provision/vm-aws-new",
            "--arch",
            "x86_64",
        ],
        "delete": ["/bin/sh", "-c", '/var/lib/resallocserver/provision/vm-delete "$RESALLOC_NAME"'],
        "livecheck": ["resalloc-check-vm-ip"],
        "list": ["/usr/bin/resalloc-aws-list"],
    }
    assert (prod["max"], prod["max_starting"], prod["min_ready"]) == (20, 4, 8)
    assert prod["livecheck"] == {"period": 180, "attempts": 3}
    assert prod["reuse"] == {"sandbox": True, "idle_timeout": 90, "max_age": 1800, "max_uses": 8}
    assert prod["tags"] == ["copr_builder", "arch_x86_64"]
    assert prod["tag_priority"] == {"arch_x86_64": 10}
    assert prod["description"] == "x86_64 builders on AWS"

    ondemand = pools["copr_ondemand"]
    assert (ondemand["max"], ondemand["max_starting"], ondemand["min_ready"]) == (4, 1, 0)
    assert ondemand["livecheck"] == {"period": 600, "attempts": 3}, "resalloc's defaults"
    assert "reuse" not in ondemand, "reuse_opportunity_time 0: no reuse"
    assert ondemand["tags"] == ["beefy"]
    assert pools["nodelete"]["min_ready"] == 2, "resalloc's default max_prealloc"

    notes = "\n".join(imported.notes)
    for expected in (
        "copr_hv_x86_64_01_prod.start_delay: no equivalent",
        "copr_hv_x86_64_01_prod.name_pattern: no equivalent",
        "copr_hv_x86_64_01_prod.tags: priorities kept as tag_priority",
        "copr_ondemand.tags_on_demand: no equivalent",
        "copr_ondemand.cmd_delete: missing",
        "nodelete.unknown_thing: unknown to resalloc too",
        "ticket_ttl",
    ):
        assert expected in notes, expected
    parse_config(imported.config, env={})  # corral accepts the result


def test_pools_that_cannot_be_carried_over_are_named() -> None:
    imported = resalloc.convert({"Bad Name": {"cmd_new": "x"}, "nonew": {"max": 2}, "x": 3})
    assert imported.config["pools"] == {}
    notes = "\n".join(imported.notes)
    assert "Bad Name: not a valid corral pool name" in notes
    assert "nonew: no cmd_new, skipped" in notes
    assert "x: not a mapping" in notes


def test_the_command_writes_the_config_and_lists_the_rest(tmp_path: Path) -> None:
    source = tmp_path / "pools.yaml"
    source.write_text(POOLS)
    target = tmp_path / "corral.yaml"
    result = run("import-resalloc", str(source), "--output", str(target))
    assert result.exit_code == 0, result.output
    written = yaml.safe_load(target.read_text())
    assert written["pools"]["copr_hv_x86_64_01_prod"]["min_ready"] == 8
    assert "# NOTE copr_hv_x86_64_01_prod.start_delay" in target.read_text()
    assert "note: copr_hv_x86_64_01_prod.start_delay: no equivalent" in result.stderr
    parse_config(written, env={})

    again = run("import-resalloc", str(source), "--output", str(target))
    assert again.exit_code == Exit.INVALID and "--force" in again.stderr
    assert run("import-resalloc", str(source), "-o", str(target), "--force").exit_code == 0

    as_json = run("import-resalloc", str(source), "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert set(data["config"]["pools"]) == {"copr_hv_x86_64_01_prod", "copr_ondemand", "nodelete"}
    assert any("start_delay" in n for n in data["notes"])


def test_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    missing = run("import-resalloc", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == Exit.INVALID and "nope.yaml" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [unclosed\n")
    result = run("import-resalloc", str(broken))
    assert result.exit_code == Exit.INVALID
    assert len(result.stderr.strip().splitlines()) == 1 and "not YAML" in result.stderr
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    result = run("import-resalloc", str(listed))
    assert result.exit_code == Exit.INVALID and "mapping of pool names" in result.stderr
