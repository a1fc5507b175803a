"""The whole corral configuration (SPEC §9): store URL, API, pools — one validated, frozen object.

Sources, later ones winning: built-in defaults, the YAML file, ``CORRAL_*`` environment variables
(``CORRAL_STORE``, ``CORRAL_API_HOST``, ``CORRAL_API_PORT``). Every problem is collected and raised
as one :class:`corral.exceptions.ConfigError` whose message lists each bad key with its location,
e.g. ``pools.fedora-x86.max_starting: must be <= max (4)``. Unknown keys are errors.

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

from corral import exceptions
from corral.pools.config import POOL_NAME, PoolConfig, describe_errors, validate_pool

ENV_PREFIX = "CORRAL_"
DEFAULT_STORE = "sqlite:///.corral/corral.db"
DEFAULT_HISTORY = 7 * 24 * 3600.0
STORE_SCHEMES = ("memory://", "sqlite:///", "sqlite://", "postgresql://", "postgresql+psycopg://")


class TokenConfig(pydantic.BaseModel):
    """Who a bearer token authenticates, and with which role."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    owner: str = Field(min_length=1, max_length=255)
    role: Literal["user", "admin"] = "user"


class ApiConfig(pydantic.BaseModel):
    """Where the HTTP API listens and which tokens it accepts."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

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


def _check_store(url: object) -> str | None:
    if not isinstance(url, str) or not url:
        return "must be a URL string"
    if not url.startswith(STORE_SCHEMES):
        return "must start with memory://, sqlite:/// or postgresql://"
    return None


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


def _parse_pools(raw_pools: object, problems: list[str]) -> dict[str, PoolConfig]:
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
        result = validate_pool(name, pool_raw)
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
) -> CorralConfig:
    """Validate raw data (as loaded from YAML) and the environment overrides into a config."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise exceptions.ConfigError(f"{source}: the top level must be a mapping")
    data: dict[str, object] = dict(raw)
    problems: list[str] = []
    _env_overrides(data, os.environ if env is None else env, problems)
    unknown = sorted(set(data) - {"store", "api", "pools", "history"})
    problems.extend(f"{key}: unknown key (allowed: api, history, pools, store)" for key in unknown)
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
    if (bad := _check_store(store)) is not None:
        problems.append(f"store: {bad}")
    api: ApiConfig | None = None
    try:
        api = ApiConfig.model_validate(data.get("api") or {})
    except pydantic.ValidationError as exc:
        problems.extend(describe_errors(exc, ("api",)))
    pools = _parse_pools(data.get("pools"), problems)
    if problems:
        listing = "\n".join(f"  {line}" for line in problems)
        raise exceptions.ConfigError(f"{source} is not valid:\n{listing}")
    if api is None:  # unreachable: a failed API model added a problem above
        raise exceptions.ConfigError(f"{source}: api: not valid")
    return CorralConfig(
        store=str(store),
        api=api,
        pools=MappingProxyType(pools),
        history=history,
        base_dir=base_dir,
    )


def load_config(path: str | Path, *, env: Mapping[str, str] | None = None) -> CorralConfig:
    """Read and validate the YAML file at ``path`` (with ``CORRAL_*`` environment overrides)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise exceptions.ConfigError(f"cannot read {file}: {exc.strerror or exc}") from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise exceptions.ConfigError(f"{file}: not valid YAML: {exc}") from exc
    return parse_config(raw, env=env, base_dir=file.resolve().parent, source=str(file))


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
