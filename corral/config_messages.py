"""How configuration problems are worded: pydantic's errors in corral's words, with hints.

A problem is one line ``where.the.key: what is wrong``. Unknown keys get a "did you mean" hint: a
resalloc ``pools.yaml`` key names its corral equivalent (people migrate from resalloc), any other
key the closest allowed one. Values name what was given, so that ``max: "5"`` says the quotes
make it a string instead of being coerced silently.

This module must not read files or the environment: it only turns errors into text.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable, Mapping, Sequence

import pydantic

RESALLOC_KEYS: Mapping[str, str] = {
    "max_prealloc": "resalloc's max_prealloc is corral's min_ready",
    "cmd_new": "resalloc's cmd_new is backend: {type: script, new: [program, args...]}",
    "cmd_delete": "resalloc's cmd_delete is backend: {type: script, delete: [...]}",
    "cmd_livecheck": "resalloc's cmd_livecheck is backend: {type: script, livecheck: [...]}",
    "cmd_release": "resalloc's cmd_release is backend: {type: script, release: [...]}",
    "cmd_list": "resalloc's cmd_list is backend: {type: script, list: [...]}",
    "livecheck_period": "resalloc's livecheck_period is livecheck: {period: SECONDS}",
    "livecheck_attempts": "resalloc's livecheck_attempts is livecheck: {attempts: N}",
    "reuse_opportunity_time": (
        "resalloc's reuse_opportunity_time is reuse: {sandbox: true, idle_timeout: SECONDS}"
    ),
    "reuse_max_count": "resalloc's reuse_max_count is reuse: {max_uses: N}",
    "reuse_max_time": "resalloc's reuse_max_time is reuse: {max_age: SECONDS}",
    "start_delay": "resalloc's start_delay has no equivalent: max_starting bounds spawns in flight",
    "name_pattern": "resalloc's name_pattern has no equivalent: VMs are named <pool>-<number>",
    "tags_on_demand": (
        "resalloc's tags_on_demand has no equivalent: every pool spawns for waiting tickets"
    ),
}
"""resalloc's pool keys and what to write instead."""


def unknown_key(key: object, allowed: Iterable[str]) -> str:
    """``unknown key`` with a hint: the corral equivalent of a resalloc key, or a close match."""
    text = str(key)
    hint = RESALLOC_KEYS.get(text)
    if hint is None:
        close = difflib.get_close_matches(text, sorted(allowed), n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
    return f"unknown key ({hint})" if hint else "unknown key"


def given(value: object) -> str:
    """What the user wrote, in YAML's words (``true (a boolean)``, ``'5' (a string)``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{shown!r} (a string)"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _bound(ctx: Mapping[str, object], key: str) -> str:
    value = ctx.get(key)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_TYPES = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "dict_type": "a mapping (key: value)",
    "mapping_type": "a mapping (key: value)",
    "list_type": "a list",
    "tuple_type": "a list",
}

_BOUNDS = {
    "greater_than": ("gt", ">"),
    "greater_than_equal": ("ge", ">="),
    "less_than": ("lt", "<"),
    "less_than_equal": ("le", "<="),
}


def _what(kind: str, ctx: Mapping[str, object], value: object, msg: str) -> str:
    if kind in _TYPES:
        return f"must be {_TYPES[kind]}, not {given(value)}"
    if kind in _BOUNDS:
        key, op = _BOUNDS[kind]
        return f"must be {op} {_bound(ctx, key)}, not {given(value)}"
    if kind == "finite_number":
        return f"must be a finite number, not {given(value)}"
    if kind == "string_too_short":
        if ctx.get("min_length") == 1:
            return "must not be empty"
        return f"must be at least {_bound(ctx, 'min_length')} characters long"
    if kind == "string_too_long":
        return f"must be at most {_bound(ctx, 'max_length')} characters long"
    if kind == "string_pattern_mismatch":
        return f"{given(value)} does not match {_bound(ctx, 'pattern')}"
    if kind == "too_long":
        return f"must have at most {_bound(ctx, 'max_length')} items"
    if kind == "too_short":
        return f"must have at least {_bound(ctx, 'min_length')} items"
    if kind == "literal_error":
        return f"must be one of {_bound(ctx, 'expected')}, not {given(value)}"
    if kind == "value_error":
        return msg.removeprefix("Value error, ")
    return msg


def _model_in(annotation: object) -> type[pydantic.BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, tuple, list, typing.Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _allowed_at(model: type[pydantic.BaseModel] | None, loc: Sequence[object]) -> list[str]:
    """The keys allowed in the mapping holding the key at ``loc`` (``loc`` is inside ``model``)."""
    current = model
    for part in loc[:-1]:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        current = None if field is None else _model_in(field.annotation)
    return [] if current is None else list(current.model_fields)


def describe_errors(
    exc: pydantic.ValidationError,
    prefix: Sequence[str] = (),
    model: type[pydantic.BaseModel] | None = None,
) -> list[str]:
    """Turn pydantic's errors into ``where.the.key: what is wrong`` lines in corral's words.

    ``model`` is the model validated, so that an unknown key can be given a close allowed one.
    """
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        if "options" in loc[1:] and loc[loc.index("options", 1) - 1] == "backend":
            del loc[loc.index("options", 1)]  # the YAML writes a backend's options beside its type
        where = ".".join([*prefix, *(str(part) for part in loc)]) or "(top)"
        kind = err["type"]
        if kind == "extra_forbidden":
            problem = unknown_key(loc[-1] if loc else "", _allowed_at(model, loc))
        elif kind == "missing":
            problem = "required"
        else:
            problem = _what(kind, err.get("ctx") or {}, err.get("input"), err["msg"])
        lines.append(f"{where}: {problem}")
    return lines
