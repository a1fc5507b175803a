"""The whole corral configuration: store URL, API, pools — one validated, frozen object.

Sources, later ones winning: built-in defaults, the YAML file, ``CORRAL_*`` environment variables
(``CORRAL_STORE``, ``CORRAL_API_HOST``, ``CORRAL_API_PORT``). Every problem is collected and raised
as one :class:`corral.exceptions.ConfigError` whose message lists each bad key with its location,
e.g. ``pools.fedora-x86.max_starting: must be <= max (4)``: unknown keys (with a "did you mean"),
repeated keys, values of the wrong type (never coerced), and — when loading a file, as ``corral
serve`` and ``corral config check`` both do — what the host must provide: the backends' programs
and the SQLite store's folder. A relative ``sqlite:///`` path in a file is resolved from the
file's folder, like the scripts' paths.

This module must not open the store, start backends or bind sockets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import pydantic
import yaml
from pydantic import Field

from corral import config_messages, exceptions
from corral.cluster.config import ClusterConfig
from corral.cluster.config import env_overrides as cluster_env
from corral.pools.config import POOL_NAME, PoolConfig, validate_pool
from corral.store import url as store_url
from corral.store.url import DEFAULT_STORE

__all__ = [
    "DEFAULT_STORE",
    "ApiConfig",
    "CorralConfig",
    "TokenConfig",
    "default_config",
    "load_config",
    "parse_config",
]

ENV_PREFIX = "CORRAL_"
DEFAULT_HISTORY = 7 * 24 * 3600.0
TOP_KEYS = ("api", "cluster", "history", "pools", "store")


class TokenConfig(pydantic.BaseModel):
    """Who a bearer token authenticates, and with which role."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    owner: str = Field(min_length=1, max_length=255)
    role: Literal["user", "admin"] = "user"


class ApiConfig(pydantic.BaseModel):
    """Where the HTTP API listens and which tokens it accepts."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)

    host: str = Field(default="127.0.0.1", min_length=1, max_length=255)
    port: int = Field(default=8642, ge=0, le=65535)
    tokens: Mapping[str, TokenConfig] = Field(default_factory=dict)
    max_body: int = Field(default=64 * 1024, ge=1024, le=64 * 1024 * 1024)
    """The largest request body the API reads, in bytes (larger ones get 413 unread)."""

    @pydantic.field_validator("tokens")
    @classmethod
    def _tokens(cls, value: Mapping[str, TokenConfig]) -> Mapping[str, TokenConfig]:
        for token in value:
            if len(token) < 8:
                raise ValueError("every token must be at least 8 characters long")
            if not (token.isascii() and token.isprintable()) or " " in token:
                # An HTTP header carries ASCII only: such a token could never match.
                raise ValueError("every token must be printable ASCII without spaces")
        return MappingProxyType(dict(value))


class CorralConfig(pydantic.BaseModel):
    """The validated configuration. Build it with :func:`load_config` or :func:`parse_config`."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    store: str = DEFAULT_STORE
    api: ApiConfig = ApiConfig()
    pools: Mapping[str, PoolConfig] = Field(default_factory=dict)
    cluster: ClusterConfig = ClusterConfig()
    """This host in a cluster on one PostgreSQL (issue 11; :mod:`corral.cluster.config`)."""
    history: float | None = DEFAULT_HISTORY
    """Seconds terminated VMs and ended tickets are kept in the store; ``None``: forever."""
    base_dir: Path | None = None
    """The folder relative paths (backend scripts) resolve against: the config file's folder."""

    def pool(self, name: str) -> PoolConfig:
        """The pool named ``name``; ``PoolNotFound`` otherwise."""
        try:
            return self.pools[name]
        except KeyError:
            raise exceptions.PoolNotFound(f"no pool named {name!r}") from None


def _store_problem(url: object, *, probe: bool) -> str | None:
    if not isinstance(url, str) or not url:
        return f"must be a URL string, not {config_messages.given(url)}"
    try:
        parsed = store_url.parse(url)
    except exceptions.ConfigError as exc:
        return exc.message
    return store_url.folder_problem(parsed) if probe else None


def _env_overrides(raw: dict[str, object], env: Mapping[str, str], problems: list[str]) -> None:
    if (store := env.get(f"{ENV_PREFIX}STORE")) is not None:
        raw["store"] = store
    overrides: dict[str, object] = {}
    if (host := env.get(f"{ENV_PREFIX}API_HOST")) is not None:
        overrides["host"] = host
    if (port := env.get(f"{ENV_PREFIX}API_PORT")) is not None:
        try:
            overrides["port"] = int(port)
        except ValueError:
            problems.append(f"{ENV_PREFIX}API_PORT: must be an integer, got {port!r}")
    if overrides:
        api = raw.get("api")
        if api is None:
            raw["api"] = overrides
        elif isinstance(api, Mapping):
            raw["api"] = {**api, **overrides}
        # anything else is reported by the API model as "not a mapping"


def _parse_pools(
    raw_pools: object, problems: list[str], base_dir: Path | None, probe: bool
) -> dict[str, PoolConfig]:
    pools: dict[str, PoolConfig] = {}
    if raw_pools is None:
        return pools
    if not isinstance(raw_pools, Mapping):
        problems.append("pools: must be a mapping of pool name to pool")
        return pools
    for name, pool_raw in raw_pools.items():
        if not isinstance(name, str) or POOL_NAME.match(name) is None:
            problems.append(
                f"pools.{name}: invalid pool name (lower-case letters, digits, '_', '.', '-')"
            )
            continue
        result = validate_pool(name, pool_raw, base_dir=base_dir, probe=probe)
        if isinstance(result, list):
            problems.extend(result)
        else:
            pools[name] = result
    return pools


def parse_config(
    raw: object,
    *,
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
    source: str = "configuration",
    probe: bool = False,
    problems: list[str] | None = None,
) -> CorralConfig:
    """Validate raw data (as loaded from YAML) and the environment overrides into a config.

    ``probe`` also checks what the host must provide: the backends are built (not started), so a
    missing script is reported, and a SQLite store's folder must exist. ``problems`` found
    earlier (while reading the file) are reported together with these.
    """
    problems = list(problems or ())
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        problems.append(
            f"the top level must be a mapping (key: value), not {config_messages.given(raw)}"
        )
        raise _invalid(source, problems)
    data: dict[str, object] = dict(raw)
    _env_overrides(data, os.environ if env is None else env, problems)
    unknown = sorted(set(data) - set(TOP_KEYS), key=str)
    problems.extend(f"{key}: {config_messages.unknown_key(key, TOP_KEYS)}" for key in unknown)
    history_raw = data.get("history", DEFAULT_HISTORY)
    history: float | None = None
    if history_raw is not None:
        if isinstance(history_raw, bool) or not isinstance(history_raw, int | float):
            problems.append("history: must be a number of seconds, or null to keep everything")
        elif history_raw <= 0:
            problems.append("history: must be > 0 seconds, or null to keep everything")
        else:
            history = float(history_raw)
    store = data.get("store", DEFAULT_STORE)
    if (bad := _store_problem(store, probe=probe)) is not None:
        problems.append(f"store: {bad}")
    api: ApiConfig | None = None
    try:
        api = ApiConfig.model_validate(data.get("api") or {})
    except pydantic.ValidationError as exc:
        problems.extend(config_messages.describe_errors(exc, ("api",), ApiConfig))
    pools = _parse_pools(data.get("pools"), problems, base_dir, probe)
    cluster = ClusterConfig()
    try:
        raw_cluster = data.get("cluster") or {}
        if isinstance(raw_cluster, Mapping):
            raw_cluster = {
                **raw_cluster,
                **cluster_env(os.environ if env is None else env, ENV_PREFIX),
            }
        cluster = ClusterConfig.model_validate(raw_cluster)
    except pydantic.ValidationError as exc:
        problems.extend(config_messages.describe_errors(exc, ("cluster",), ClusterConfig))
    if problems:
        raise _invalid(source, problems)
    if api is None:  # unreachable: a failed API model added a problem above
        raise exceptions.ConfigError(f"{source}: api: not valid")
    return CorralConfig(
        store=str(store),
        api=api,
        pools=MappingProxyType(pools),
        cluster=cluster,
        history=history,
        base_dir=base_dir,
    )


def _invalid(source: str, problems: list[str]) -> exceptions.ConfigError:
    listing = "\n".join(f"  {line}" for line in problems)
    return exceptions.ConfigError(f"{source} is not valid:\n{listing}")


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting repeated keys (which YAML would resolve silently: the last
    one wins) instead of accepting them."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.repeated: list[str] = []
        """One line per repeated key: where it is and where it was first."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        """Build a mapping, noting every key that repeats an earlier one of the same mapping."""
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *defaults' may be overridden by the mapping's own keys
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                continue  # an unhashable key is reported by PyYAML itself
            line = key_node.start_mark.line + 1
            if key in seen:
                self.repeated.append(
                    f"line {line}: key {key!r} repeated (first on line {seen[key]}); "
                    "YAML would silently keep the last one"
                )
            else:
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> tuple[object, list[str]]:
    """The YAML document in ``path`` and the problems no schema can see (repeated keys).

    ``ConfigError`` when the file cannot be read, is not UTF-8 or not YAML.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise exceptions.ConfigError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise exceptions.ConfigError(
            f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
            "save the file as UTF-8"
        ) from exc
    loader = _Loader(text)
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        raise exceptions.ConfigError(f"{path}: not valid YAML: {exc}") from exc
    finally:
        loader.dispose()
    return raw, loader.repeated


def _resolve_store(raw: object, base_dir: Path) -> object:
    """``raw`` with a relative ``sqlite:///`` store made absolute from ``base_dir``."""
    if not isinstance(raw, Mapping):
        return raw
    store = raw.get("store")
    if not isinstance(store, str):
        return raw
    try:
        parsed = store_url.parse(store)
    except exceptions.ConfigError:
        return raw  # reported by the validation
    if parsed.kind != "sqlite" or parsed.path is None or Path(parsed.path).is_absolute():
        return raw
    return {**raw, "store": f"sqlite:///{base_dir / parsed.path}"}


def load_config(
    path: str | Path, *, env: Mapping[str, str] | None = None, probe: bool = True
) -> CorralConfig:
    """Read and validate the YAML file at ``path`` (with ``CORRAL_*`` environment overrides).

    Relative paths in the file (scripts, a ``sqlite:///`` store) resolve from the file's folder.
    ``probe`` (the default) also checks what the host must provide, as ``corral serve`` needs it:
    the backends' programs exist and are executable, the SQLite store's folder exists.
    """
    file = Path(path)
    raw, repeated = read_yaml(file)
    base_dir = file.resolve().parent
    return parse_config(
        _resolve_store(raw, base_dir),
        env=env,
        base_dir=base_dir,
        source=str(file),
        probe=probe,
        problems=repeated,
    )


DEMO_POOL = "demo"


def default_config(*, env: Mapping[str, str] | None = None) -> CorralConfig:
    """The no-config demo: a SQLite store under ``./.corral/`` and one pool on the fake backend."""
    raw = {
        "store": DEFAULT_STORE,
        "pools": {
            DEMO_POOL: {
                "backend": {"type": "fake"},
                "tags": ["demo"],
                "max": 10,
                "max_starting": 4,
                "min_ready": 2,
                "reuse": {"sandbox": True, "max_uses": 5},
            }
        },
    }
    return parse_config(raw, env=env, source="built-in demo configuration")
