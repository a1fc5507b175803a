"""Pool configuration models (the ``pools`` part of corral.yaml), validated with pydantic 2.

Every model is frozen, forbids unknown keys and is strict: ``min_ready: true``, ``max: "5"`` or
``sandbox: "yes"`` are errors, never coerced. Cross-field rules (``max_starting <= max``,
``min_ready <= max``) and the backend's own options are checked by :func:`validate_pool`, which
collects every problem with its location instead of stopping at the first; with ``probe`` it also
builds the backend, so that what the host must provide (the script backend's programs) is checked
too. This module must not start backends or touch the store.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import pydantic
from pydantic import Field

from corral import config_messages, exceptions
from corral.pools.allocation import PoolLimits

POOL_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
"""Pool names: lower-case, usable in VM names and lock keys (``vm/<pool>-0007``)."""

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Tag = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:+-]+$")]


class _Frozen(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True, strict=True)


class LivecheckConfig(_Frozen):
    """How often a VM is health-checked, and how many failures in a row terminate it."""

    period: Seconds = 60.0
    attempts: int = Field(default=3, ge=1, le=1000)


class ReuseConfig(_Frozen):
    """When a released VM goes back to the pool instead of being terminated."""

    sandbox: bool = False
    """Reuse a VM for the next ticket with the same sandbox (tickets without one never reuse)."""
    max_uses: int | None = Field(default=None, ge=1)
    """Terminate a VM after this many tickets."""
    max_age: Seconds | None = None
    """Terminate an idle VM older than this (seconds since its spawn started)."""
    idle_timeout: Seconds | None = None
    """Terminate a used VM left idle this long (fresh VMs are the preallocation: they stay)."""


class DiskConfig(_Frozen):
    """One disk of the VM template."""

    size_gib: float = Field(default=10.0, gt=0, allow_inf_nan=False)
    bus: str = Field(default="virtio", pattern=r"^[a-z0-9_-]{1,16}$")
    source: str | None = Field(default=None, min_length=1, max_length=4096)
    """An image to base the disk on (backend-specific path or id)."""


class NicConfig(_Frozen):
    """One network interface of the VM template."""

    network: str = Field(default="default", min_length=1, max_length=255)
    model: str = Field(default="virtio", pattern=r"^[a-z0-9_-]{1,32}$")


class TemplateConfig(_Frozen):
    """What a VM of the pool looks like (the backend turns it into a machine)."""

    memory_mib: int = Field(default=1024, ge=16, le=16 * 1024 * 1024)
    vcpus: int = Field(default=1, ge=1, le=4096)
    disks: tuple[DiskConfig, ...] = Field(default=(), strict=False)  # YAML gives lists
    nics: tuple[NicConfig, ...] = Field(default=(), strict=False)

    def as_mapping(self) -> dict[str, object]:
        """The template as plain data, as ``VMSpec.template`` carries it."""
        return self.model_dump(mode="json")


class BackendConfig(_Frozen):
    """The pool's backend: its ``type`` and that backend's own options (checked by the backend)."""

    type: str = Field(min_length=1, max_length=64)
    options: Mapping[str, object] = Field(default_factory=dict)

    @pydantic.model_validator(mode="before")
    @classmethod
    def _split(cls, data: object) -> object:
        # The YAML writes options next to ``type``; keep them apart so that the backend's model,
        # not this one, decides which keys exist.
        if isinstance(data, Mapping) and "options" not in data:
            rest = {k: v for k, v in data.items() if k != "type"}
            split: dict[str, object] = {"options": rest}
            if "type" in data:
                split["type"] = data["type"]
            return split
        return data


class PoolConfig(_Frozen):
    """One pool: its backend, limits, health checks, reuse, lease and VM template (seconds)."""

    name: str = Field(pattern=POOL_NAME.pattern)
    backend: BackendConfig
    description: str | None = Field(default=None, min_length=1, max_length=1000)
    """What the pool is for, shown to operators."""
    tags: tuple[Tag, ...] = Field(default=(), strict=False)  # YAML gives lists
    tag_priority: Mapping[Tag, Annotated[int, Field(ge=-1_000_000, le=1_000_000)]] = Field(
        default_factory=dict
    )
    """Preference of this pool for tickets asking for these tags (resalloc's tag priorities):
    among pools that can serve a ticket, the one with the highest sum over the ticket's tags is
    chosen first (below sandbox affinity)."""
    max: int = Field(default=10, ge=0, le=1_000_000)
    max_starting: int = Field(default=4, ge=1, le=100_000)
    min_ready: int = Field(default=0, ge=0)
    max_per_owner: int | None = Field(default=None, ge=1)
    slots: int = Field(default=1, ge=1, le=1000)
    """Tickets one VM serves at once (GitLab's ``capacity_per_instance``); a ticket asking for
    ``exclusive`` takes the whole VM. 1: one ticket per VM."""
    reserve_after: Seconds | None = 60.0
    """A multi-machine ticket that waited this long reserves VMs as they free up, so smaller
    tickets no longer pass it; null: never (it may starve under a stream of small tickets)."""
    spawn_timeout: Seconds = 600.0
    terminate_timeout: Seconds = 300.0
    livecheck: LivecheckConfig = LivecheckConfig()
    reuse: ReuseConfig = ReuseConfig()
    ticket_ttl: Seconds | None = 900.0
    """A ticket not renewed within this lease is expired and its VM reclaimed; null: no lease."""
    template: TemplateConfig = TemplateConfig()
    call_timeout: Seconds = 60.0
    """Timeout of one backend call other than spawn and terminate (poll, livecheck, list, ...)."""
    poll_interval: Seconds = 1.0
    """Longest pause between two polls of a VM coming up."""
    backend_concurrency: int | None = Field(default=None, ge=1, le=10_000)
    """Backend calls in flight at most; default ``max_starting + 8``."""
    sweep_interval: Seconds | None = 600.0
    """How often the backend's inventory is compared with the store while running, to
    terminate leaked machines (on start it always is); null: only on start."""

    def limits(self) -> PoolLimits:
        """The limits the pure allocation and preallocation decisions need."""
        return PoolLimits(
            name=self.name,
            tags=frozenset(self.tags),
            tag_priority=tuple(sorted(self.tag_priority.items())),
            max=self.max,
            max_starting=self.max_starting,
            min_ready=self.min_ready,
            max_per_owner=self.max_per_owner,
            reuse_sandbox=self.reuse.sandbox,
            max_uses=self.reuse.max_uses,
            max_age=self.reuse.max_age,
            idle_timeout=self.reuse.idle_timeout,
            slots=self.slots,
            reserve_after=self.reserve_after,
        )


def describe_errors(exc: pydantic.ValidationError, prefix: tuple[str, ...] = ()) -> list[str]:
    """Turn pydantic errors of a pool into ``where.the.key: what is wrong`` lines."""
    return config_messages.describe_errors(exc, prefix, PoolConfig)


def validate_pool(
    name: str,
    raw: object,
    prefix: tuple[str, ...] = ("pools",),
    *,
    base_dir: Path | None = None,
    probe: bool = False,
) -> PoolConfig | list[str]:
    """Validate one pool's raw mapping; return the pool, or every problem found as text lines.

    With ``probe``, the backend is also built (not started) with ``base_dir`` as the folder its
    relative paths resolve against, so a missing or non-executable script is reported here, as
    ``corral serve`` would find it.
    """
    where = (*prefix, name)
    if not isinstance(raw, Mapping):
        return [f"{'.'.join(where)}: must be a mapping, not {config_messages.given(raw)}"]
    if "name" in raw:
        return [f"{'.'.join((*where, 'name'))}: unknown key (the pool's key is its name)"]
    try:
        pool = PoolConfig.model_validate({**raw, "name": name})
    except pydantic.ValidationError as exc:
        problems = describe_errors(exc, where)
        backend = raw.get("backend")
        if isinstance(backend, Mapping) and isinstance(backend.get("type"), str):
            # the backend's own options are checked even when other keys of the pool are wrong
            problems.extend(_backend_problems(backend, where, base_dir, probe=probe))
        return problems
    bound = _backend_bound(pool, base_dir)
    if bound is not None and "max" not in raw and pool.max > bound:
        pool = pool.model_copy(update={"max": bound})  # the default follows the inventory
    if "max_starting" not in raw and pool.max_starting > pool.max:
        # the default (4) follows a smaller max rather than contradict it
        pool = pool.model_copy(update={"max_starting": max(1, pool.max)})
    problems = []
    if pool.max_starting > pool.max and pool.max > 0:
        problems.append(f"{'.'.join((*where, 'max_starting'))}: must be <= max ({pool.max})")
    if bound is not None and pool.max > bound:
        problems.append(
            f"{'.'.join((*where, 'max'))}: must be <= {bound}, the machines the "
            f"{pool.backend.type} backend has (its inventory bounds the pool)"
        )
    if pool.min_ready > pool.max:
        problems.append(f"{'.'.join((*where, 'min_ready'))}: must be <= max ({pool.max})")
    for tag in sorted(set(pool.tag_priority) - set(pool.tags)):
        problems.append(
            f"{'.'.join((*where, 'tag_priority', tag))}: not one of the pool's tags "
            f"({', '.join(pool.tags) or 'none'})"
        )
    backend_raw = {"type": pool.backend.type, **pool.backend.options}
    problems.extend(_backend_problems(backend_raw, where, base_dir, probe=probe))
    return problems or pool


def _backend_bound(pool: PoolConfig, base_dir: Path | None) -> int | None:
    """The most VMs the pool's backend can hold (``BackendOptions.max_vms``); ``None`` when it
    sets no bound or its options are wrong (reported by :func:`_backend_problems`)."""
    from corral import backends

    try:
        options = backends.validate_options(pool.backend.type, pool.backend.options)
    except exceptions.ConfigError:
        return None
    return options.max_vms(base_dir)


def _backend_problems(
    raw: Mapping[str, object], where: tuple[str, ...], base_dir: Path | None, *, probe: bool
) -> list[str]:
    # Imported here: the registry reads entry points, which is slow-ish and not needed to
    # import this module.
    from corral import backends

    at = ".".join((*where, "backend"))
    type_name = str(raw["type"])
    options = {k: v for k, v in raw.items() if k != "type"}
    try:
        cls = backends.backend_class(type_name)
        backends.validate_options(type_name, options)
        if probe:
            backends.load_backend(type_name, options, pool=where[-1], base_dir=base_dir)
    except exceptions.ConfigError as exc:
        cause = exc.__cause__
        if isinstance(cause, pydantic.ValidationError):
            return config_messages.describe_errors(cause, (at,), cls.options_model)
        return [f"{at}: {exc.message}"]
    return []
