"""``corral import-resalloc pools.yaml``: resalloc's pool configuration in corral's words.

:func:`convert` is pure: it maps each resalloc pool (``resallocserver/manager.py``'s ``Pool``
keys, with resalloc's defaults where a key is absent, so the pools behave as they did) to a
corral pool on the ``script`` backend, and lists every key that has no equivalent or needs the
operator's eye. :func:`import_resalloc` reads the file, checks the result with corral's own
configuration validation, and writes it. This module must not run anything resalloc ran.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from corral import exceptions
from corral.cli import output
from corral.cli.common import Json, handle_errors

# YAML and the configuration models are imported where they are used: every 'corral' command
# loads this module, and only 'import-resalloc' needs them.

DEFAULTS: Mapping[str, object] = {
    "max": 4,
    "max_starting": 1,
    "max_prealloc": 2,
    "livecheck_period": 600,
    "livecheck_attempts": 3,
    "reuse_opportunity_time": 0,
    "reuse_max_count": 0,
    "reuse_max_time": 3600,
}
"""resalloc's values for the keys a pool leaves out (its ``Pool`` class attributes)."""

COMMANDS = {
    "cmd_new": "new",
    "cmd_delete": "delete",
    "cmd_livecheck": "livecheck",
    "cmd_release": "release",
    "cmd_list": "list",
}
"""resalloc's commands and the ``script`` backend's names for them."""

NO_EQUIVALENT = {
    "start_delay": "no equivalent: max_starting bounds the spawns in flight",
    "name_pattern": "no equivalent: corral names VMs <pool>-<number>",
    "named_counters": "no equivalent (RESALLOC_ID_IN_POOL is set for the scripts)",
}

SHELL = re.compile(r"""[|&;<>()$`\\"'*?\[\]#~=%{}\n]""")
"""Characters that make a resalloc command need a shell (resalloc runs them with one)."""

PLACEHOLDER_DELETE = ["REPLACE-ME-resalloc-had-no-cmd_delete"]


@dataclass
class Imported:
    """The corral configuration (as YAML-ready data) and what could not be carried over."""

    config: dict[str, object]
    notes: list[str] = field(default_factory=list)
    """One line per key without an equivalent or needing attention: ``pool.key: why``."""


def argv(command: object) -> list[str]:
    """A resalloc command (a shell string) as an argv: split when it is plain words, else run
    through ``/bin/sh -c`` as resalloc did."""
    if isinstance(command, list) and all(isinstance(a, str) for a in command) and command:
        return list(command)
    text = str(command).strip()
    if SHELL.search(text):
        return ["/bin/sh", "-c", text]
    return shlex.split(text)


def _tags(value: object, where: str, notes: list[str], priorities: dict[str, int]) -> list[str]:
    """resalloc's tags (names, or ``{name, priority}``); non-zero priorities go to
    ``priorities`` (corral's ``tag_priority``)."""
    if value is None:
        return []
    if not isinstance(value, list):
        notes.append(f"{where}: not a list, ignored (as resalloc does)")
        return []
    tags = []
    for item in value:
        if isinstance(item, Mapping):
            name, priority = item.get("name"), item.get("priority", 0)
            if name is None:
                notes.append(f"{where}: a tag without a name, ignored")
                continue
            if isinstance(priority, int) and not isinstance(priority, bool) and priority:
                priorities[str(name)] = priority
            elif priority not in (0, None):
                notes.append(f"{where}: {name}: priority {priority!r} is not an integer, dropped")
            tags.append(str(name))
        else:
            tags.append(str(item))
    return tags


def convert_pool(name: str, raw: object, notes: list[str]) -> dict[str, object] | None:
    """One resalloc pool as a corral pool (``None`` when it cannot be carried over)."""
    from corral.pools.config import POOL_NAME, PoolConfig

    if not isinstance(raw, Mapping):
        notes.append(f"{name}: not a mapping, skipped (resalloc ignores it too)")
        return None
    if not POOL_NAME.match(name):
        notes.append(f"{name}: not a valid corral pool name ({POOL_NAME.pattern}), skipped")
        return None
    known = set(DEFAULTS) | set(COMMANDS) | set(NO_EQUIVALENT) | {"tags", "tags_on_demand"}
    for key in raw:
        if key not in known | {"description"}:
            notes.append(f"{name}.{key}: unknown to resalloc too (it warns 'useless'), dropped")
    value = {**DEFAULTS, **raw}
    backend = _backend(name, value, notes)
    if backend is None:
        return None
    pool: dict[str, object] = {"backend": backend}
    priorities: dict[str, int] = {}
    tags = _tags(value.get("tags"), f"{name}.tags", notes, priorities)
    on_demand = _tags(value.get("tags_on_demand"), f"{name}.tags_on_demand", notes, priorities)
    if on_demand:
        notes.append(
            f"{name}.tags_on_demand: no equivalent; added to tags with min_ready 0 "
            "(corral spawns for waiting tickets)"
        )
    pool["tags"] = tags + [t for t in on_demand if t not in tags]
    if priorities:
        if "tag_priority" in PoolConfig.model_fields:
            pool["tag_priority"] = priorities
            notes.append(
                f"{name}.tags: priorities kept as tag_priority; resalloc's +500 for a reused "
                "VM is corral's sandbox affinity, which always ranks first"
            )
        else:
            notes.append(f"{name}.tags: tag priorities have no equivalent, dropped")
    pool["max"] = value["max"]
    pool["max_starting"] = value["max_starting"]
    pool["min_ready"] = 0 if on_demand else min(_int(value["max_prealloc"]), _int(value["max"]))
    pool["livecheck"] = {
        "period": value["livecheck_period"],
        "attempts": value["livecheck_attempts"],
    }
    if _int(value["reuse_opportunity_time"]) > 0:
        pool["reuse"] = _reuse(value)
    if value.get("description"):
        if "description" in PoolConfig.model_fields:
            pool["description"] = value["description"]
        else:
            notes.append(f"{name}.description: no equivalent yet, dropped")
    notes.extend(
        f"{name}.{key}: {why}"
        for key, why in NO_EQUIVALENT.items()
        if raw.get(key) not in (None, 0, [], "")
    )
    return pool


def _backend(name: str, value: Mapping[str, object], notes: list[str]) -> dict[str, object] | None:
    """The ``script`` backend running the pool's commands (``None`` without ``cmd_new``)."""
    backend: dict[str, object] = {"type": "script"}
    for key, ours in COMMANDS.items():
        if value.get(key):
            backend[ours] = argv(value[key])
    if "new" not in backend:
        notes.append(f"{name}: no cmd_new, skipped (a pool needs a command that spawns)")
        return None
    if "delete" not in backend:
        backend["delete"] = PLACEHOLDER_DELETE
        notes.append(
            f"{name}.cmd_delete: missing; corral needs one (it never forgets a VM): "
            "replace the placeholder"
        )
    return backend


def _reuse(value: Mapping[str, object]) -> dict[str, object]:
    """resalloc's reuse keys (reuse on: ``reuse_opportunity_time`` > 0) as corral's."""
    reuse: dict[str, object] = {
        "sandbox": True,
        "idle_timeout": value["reuse_opportunity_time"],
        "max_age": value["reuse_max_time"],
    }
    if _int(value["reuse_max_count"]) > 0:
        reuse["max_uses"] = value["reuse_max_count"]
    return reuse


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def convert(raw: object) -> Imported:
    """resalloc's ``pools.yaml`` data as corral configuration data, with notes."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise exceptions.InvalidInput("pools.yaml: expected a mapping of pool names to pools")
    notes: list[str] = []
    pools: dict[str, object] = {}
    for name, body in raw.items():
        pool = convert_pool(str(name), body, notes)
        if pool is not None:
            pools[str(name)] = pool
    if pools:
        notes.append(
            "all pools: resalloc tickets never expire; corral's expire after ticket_ttl (900 s) "
            "unless renewed ('corral acquire' and the client renew): set ticket_ttl: null to "
            "keep resalloc's behaviour"
        )
        notes.append(
            "all pools: corral takes the first line cmd_new prints as the VM's address "
            "(resalloc passed the whole output as RESALLOC_RESOURCE_DATA)"
        )
    return Imported(config={"pools": pools}, notes=notes)


@handle_errors
def import_resalloc(
    file: Annotated[Path, typer.Argument(help="resalloc's pools.yaml.")],
    out: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the corral.yaml here (default: stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite --output if it exists.")] = False,
    json: Json = False,
) -> None:
    """Write the corral configuration equivalent to resalloc's pools.yaml, and list on stderr
    what has no equivalent (exit 3 if the file cannot be read or the result is invalid)."""
    import yaml

    from corral import config as corral_config

    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise exceptions.InvalidInput(f"{file}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise exceptions.InvalidInput(f"{file}: not YAML: {exc}".splitlines()[0]) from exc
    imported = convert(raw)
    corral_config.parse_config(imported.config, env={}, source=f"import of {file}")
    if json:
        output.print_json({"config": imported.config, "notes": imported.notes})
        return
    text = yaml.safe_dump(imported.config, sort_keys=False, default_flow_style=None)
    header = f"# corral configuration imported from resalloc's {file}\n"
    header += "".join(f"# NOTE {note}\n" for note in imported.notes)
    if out is None:
        output.console.print(header + text, markup=False, end="")
    else:
        if out.exists() and not force:
            raise exceptions.InvalidInput(f"--output: {out} exists (--force to overwrite)")
        out.write_text(header + text, encoding="utf-8")
        output.console.print(f"wrote {out}", markup=False)
    for note in imported.notes:
        output.errors.print(f"note: {note}", markup=False)
