"""Writes :mod:`corral.client.records` from :mod:`corral.wire`: ``python -m corral.client.generate``

The wire models are the one definition of the API's JSON; the client reads answers into records
generated from them (:mod:`corral.client.record` says why), so a field added to a model reaches
the client by running this, and ``tests/client/test_records.py`` fails while the generated module
is not current (``--check`` says the same). This is a development tool: nothing at run time
imports it.
"""

from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
import types
import typing
from enum import StrEnum
from pathlib import Path

from pydantic import BaseModel, JsonValue
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from corral import wire
from corral.pools import lifecycle

TARGET = Path(__file__).with_name("records.py")

CONSTANTS = ("NO_CONTROL", "MIN_TTL", "MAX_TTL", "MAX_COUNT", "MAX_REQUESTS", "MAX_HOLD")
"""The limits of :mod:`corral.wire` the client checks its arguments against."""

HEADER = '''\
"""The server's answers as the client returns them: GENERATED from :mod:`corral.wire` by
``python -m corral.client.generate``; do not edit (``tests/client/test_records.py`` fails when
this is not what the generator writes).

One immutable record per wire model, with the model's fields, defaults and descriptions, read
from JSON by :meth:`~corral.client.record.Record.from_json` and written back by
:meth:`~corral.client.record.Record.to_json`, without importing pydantic
(:mod:`corral.client.record` says why).
"""

from __future__ import annotations

from enum import StrEnum

from corral.client import record
from corral.types import JSON

'''


def wire_models() -> list[type[BaseModel]]:
    """The answer models of :mod:`corral.wire`, in definition order (a model before the ones
    that nest it)."""
    base = wire._Wire  # the wire models' own base marks an answer model
    return [
        value
        for value in vars(wire).values()
        if isinstance(value, type) and issubclass(value, base) and value is not base
    ]


def _kind(annotation: object, names: set[str]) -> tuple[str, str]:
    """(Python annotation, check expression) of a field type."""
    simple = {
        str: ("str", "record.text"),
        int: ("int", "record.integer"),
        float: ("float", "record.number"),
        bool: ("bool", "record.boolean"),
    }
    if annotation is JsonValue:
        return "JSON", "record.anything"
    if isinstance(annotation, type) and annotation in simple:
        return simple[annotation]
    if isinstance(annotation, type) and annotation.__name__ in names:
        return annotation.__name__, f"record.record({annotation.__name__})"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union) and len(args) == 2 and type(None) in args:
        inner, check = _kind(next(a for a in args if a is not type(None)), names)
        return f"{inner} | None", f"record.optional({check})"
    if origin is list and len(args) == 1:
        inner, check = _kind(args[0], names)
        return f"list[{inner}]", f"record.list_of({check})"
    if origin is dict and len(args) == 2 and args[0] is str:
        inner, check = _kind(args[1], names)
        return f"dict[str, {inner}]", f"record.dict_of({check})"
    raise TypeError(f"no record type for {annotation!r}: teach corral.client.generate")


def _default(info: FieldInfo, annotation: str) -> tuple[str, str | None]:
    """(the ``__init__`` parameter's annotation and default, the expression that makes the
    default when the parameter is left out, or None)."""
    if info.default_factory is not None:
        factory = info.default_factory
        made = "[]" if factory is list else "{}" if factory is dict else f"{factory.__name__}()"
        return f"{annotation} | None = None", made
    if info.default is PydanticUndefined:
        return annotation, None
    return f"{annotation} = {_literal(info.default)}", None


def _literal(value: object) -> str:
    """``repr(value)``, a string in double quotes as the formatter writes it."""
    text = repr(value)
    if isinstance(value, str) and text.startswith("'") and '"' not in value:
        return '"' + text[1:-1] + '"'
    return text


def _doc(text: str, indent: str) -> list[str]:
    """A docstring of ``text``, wrapped to the line length."""
    if '"""' in text or "\\" in text:
        raise ValueError(f"a docstring the generator cannot quote: {text!r}")
    body = textwrap.fill(text, width=100 - len(indent) - 6, break_on_hyphens=False)
    lines = body.splitlines()
    if len(lines) == 1 and len(indent) + len(lines[0]) + 6 <= 100:
        return [f'{indent}"""{lines[0]}"""']
    return [f'{indent}"""{lines[0]}', *(f"{indent}{line}" for line in lines[1:]), f'{indent}"""']


def _record(model: type[BaseModel], names: set[str]) -> list[str]:
    doc = inspect.cleandoc(model.__doc__ or model.__name__)
    lines = [f"class {model.__name__}(record.Record):"]
    doc_lines = doc.splitlines()
    if len(doc_lines) == 1 and len(doc_lines[0]) + 10 <= 100:
        lines.append(f'    """{doc_lines[0]}"""')
    else:
        lines.append(f'    """{doc_lines[0]}')
        lines += [f"    {line}".rstrip() for line in doc_lines[1:]]
        lines.append('    """')
    fields = model.model_fields
    if len(fields) == 1:
        lines += ["", f'    __slots__ = ("{next(iter(fields))}",)']
    else:
        lines += [
            "",
            "    __slots__ = (",
            *(f'        "{name}",' for name in sorted(fields)),
            "    )",
        ]
    lines.append("")
    params, sets, table = [], [], []
    for name, info in fields.items():
        annotation, check = _kind(info.annotation, names)
        lines.append(f"    {name}: {annotation}")
        if info.description:
            lines += _doc(info.description, "    ")
        param, made = _default(info, annotation)
        params.append(f"        {name}: {param},")
        value = name if made is None else f"{made} if {name} is None else {name}"
        sets.append(f'        _set(self, "{name}", {value})')
        table.append(f'        ("{name}", {check}, {info.is_required()}),')
    if len(table) == 1:
        lines += ["", f"    FIELDS = ({table[0].strip()})"]
    else:
        lines += ["", "    FIELDS = (", *table, "    )"]
    lines += ["", "    def __init__(", "        self,", "        *,", *params, "    ) -> None:"]
    lines += ["        _set = object.__setattr__", *sets]
    for line in lines:
        if len(line) > 100:
            raise ValueError(f"a generated line is longer than 100 characters: {line!r}")
    return lines


def _states(states: type[StrEnum]) -> list[str]:
    """A copy of one of :mod:`corral.pools.lifecycle`'s enums (a module that imports more than
    the client needs)."""
    doc = inspect.cleandoc(states.__doc__ or states.__name__)
    origin = f"Generated from :class:`corral.pools.lifecycle.{states.__name__}`."
    lines = [f"class {states.__name__}(StrEnum):", *_doc(f"{doc} {origin}", "    "), ""]
    lines += [f"    {member.name} = {_literal(member.value)}" for member in states]
    return lines


def source() -> str:
    """The text of :mod:`corral.client.records`."""
    models = wire_models()
    names = {model.__name__ for model in models}
    parts = [
        HEADER.rstrip("\n"),
        "",
        "# corral.wire's limits, which the client checks arguments against",
    ]
    parts += [f"{name} = {_literal(getattr(wire, name))}" for name in CONSTANTS]
    parts += ["", "", *_states(lifecycle.TicketState)]
    for model in models:
        parts += ["", "", *_record(model, names)]
    exported = [*CONSTANTS, *names, lifecycle.TicketState.__name__]
    exported.sort(key=lambda name: (not name.isupper(), name))
    parts += ["", "", "__all__ = [", *(f'    "{name}",' for name in exported), "]", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Write the module, or with ``--check`` say whether it is current (exit status 1 if not)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only check, write nothing")
    args = parser.parse_args(argv)
    text = source()
    if args.check:
        current = TARGET.exists() and TARGET.read_text() == text
        print(f"{TARGET}: {'current' if current else 'NOT current: run python -m ' + __name__}")
        return 0 if current else 1
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
