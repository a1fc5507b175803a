"""Backends (SPEC §6): the plugin registry that turns a pool's ``backend:`` config into a driver.

Backends are found by name through the ``corral.backends`` entry-point group (``type: script`` →
``corral.backends.script:ScriptBackend``), so third-party packages add their own by declaring an
entry point. Options are validated by the backend's pydantic model; an unknown key is an error.

This module must not import any backend implementation eagerly (each may need an optional extra).
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path

import pydantic

from corral import exceptions
from corral.backends.base import Backend, BackendOptions

ENTRY_POINT_GROUP = "corral.backends"

__all__ = [
    "ENTRY_POINT_GROUP",
    "backend_class",
    "installed_backends",
    "load_backend",
    "validate_options",
]


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The ``corral.backends`` entry points (the one place the registry reads them, so that a
    test can add one without patching ``importlib.metadata`` for every thread of the process)."""
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def installed_backends() -> list[str]:
    """The ``type`` names of every installed backend, sorted."""
    return sorted({ep.name for ep in _entry_points()})


def backend_class(type_name: str) -> type[Backend]:
    """The backend class registered under ``type_name``; ``BackendNotFound`` lists the installed."""
    matches = [ep for ep in _entry_points() if ep.name == type_name]
    if not matches:
        installed = ", ".join(installed_backends()) or "none"
        raise exceptions.BackendNotFound(
            f"no backend of type {type_name!r} is installed (installed: {installed})"
        )
    try:
        cls = matches[0].load()
    except ImportError as exc:
        raise exceptions.BackendNotFound(
            f"backend {type_name!r} is installed but cannot be imported ({exc}); "
            f"is its extra installed? (pip install 'corral[{type_name}]')"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise exceptions.BackendNotFound(
            f"entry point {type_name!r} ({matches[0].value}) is not a corral Backend class"
        )
    return cls


def _describe(error: Mapping[str, object]) -> str:
    loc = error.get("loc", ())
    where = ".".join(str(part) for part in loc) if isinstance(loc, tuple) else str(loc)
    if error.get("type") == "extra_forbidden":
        return f"{where}: unknown option"
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def validate_options(type_name: str, raw: Mapping[str, object]) -> BackendOptions:
    """Validate a backend's raw options, raising ``ConfigError`` that names every bad key.

    A ``type`` key equal to ``type_name`` is accepted and ignored, so a pool's whole ``backend:``
    mapping can be passed as it is.
    """
    cls = backend_class(type_name)
    if not isinstance(raw, Mapping):
        raise exceptions.ConfigError(f"backend {type_name!r}: options must be a mapping")
    data = dict(raw)
    if "type" in data:
        if data["type"] != type_name:
            raise exceptions.ConfigError(
                f"backend {type_name!r}: type: {data['type']!r} does not match {type_name!r}"
            )
        del data["type"]
    try:
        return cls.options_model.model_validate(data)
    except pydantic.ValidationError as exc:
        problems = "; ".join(_describe(err) for err in exc.errors())
        allowed = ", ".join(sorted(cls.options_model.model_fields))
        raise exceptions.ConfigError(
            f"backend {type_name!r}: {problems} (allowed options: {allowed})"
        ) from exc


def load_backend(
    type_name: str,
    raw_options: Mapping[str, object],
    *,
    pool: str,
    base_dir: Path | None = None,
) -> Backend:
    """Validate the options and instantiate the backend ``type_name`` for ``pool``.

    ``base_dir`` is the folder relative paths in the options resolve against (the config file's).
    """
    options = validate_options(type_name, raw_options)
    cls = backend_class(type_name)
    return cls(options, pool=pool, base_dir=base_dir)
