"""The base of the client's answer types (:mod:`corral.client.records`): immutable records read
from the server's JSON with the standard library only.

The wire format has one definition, the pydantic models of :mod:`corral.wire`, which the server
validates and publishes in its OpenAPI schema. Importing pydantic and building those models costs
a client process about 200 ms of CPU, seven times the interpreter's start (issue 14), so the
client does not: :mod:`corral.client.records` is *generated* from :mod:`corral.wire` by
:mod:`corral.client.generate` (a test checks it is current), and reads answers through the
checks below, which accept what the models' lax validation accepts of JSON: the field's type
(an integer for a float), ``null`` only where the model allows it, unknown fields ignored, a
missing field its model's default.

This module must import nothing beyond the standard library and :mod:`corral.exceptions`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from corral import exceptions

R = TypeVar("R", bound="Record")

Check = Callable[[object], Any]
"""Reads one JSON value as a field's type (raises :class:`Unreadable`)."""


class Unreadable(ValueError):
    """A JSON value that is not of its field's type."""


class Record:
    """An immutable answer of the server: one generated subclass per wire model.

    Subclasses declare ``__slots__`` (their fields, in the model's order), a typed keyword-only
    ``__init__`` and ``FIELDS``: ``(name, check, required)`` per field.
    """

    __slots__ = ()
    FIELDS: ClassVar[tuple[tuple[str, Check, bool], ...]] = ()

    @classmethod
    def from_json(cls: type[R], data: object) -> R:
        """The record of a decoded JSON object; :class:`~corral.exceptions.CorralError` naming
        the field when ``data`` does not match the wire model."""
        try:
            return cls._read(data)
        except Unreadable as exc:
            raise exceptions.CorralError(
                f"the server sent a {cls.__name__} the client cannot read: {exc}"
            ) from None

    @classmethod
    def _read(cls: type[R], data: object) -> R:
        if not isinstance(data, dict):
            raise Unreadable(f"expected an object, got {_kind(data)}")
        values: dict[str, object] = {}
        for name, check, required in cls.FIELDS:
            if name in data:
                try:
                    values[name] = check(data[name])
                except Unreadable as exc:
                    raise Unreadable(f"{name}: {exc}") from None
            elif required:
                raise Unreadable(f"{name}: missing")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data, every field included (what the server sent, with
        the defaults of the fields it left out)."""
        return {name: _dump(getattr(self, name)) for name, _, _ in self.FIELDS}

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n, _, _ in self.FIELDS)

    def __hash__(self) -> int:
        return hash(tuple(getattr(self, n) for n, _, _ in self.FIELDS))

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n, _, _ in self.FIELDS)
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), self.to_json()))


def _rebuild(cls: type[R], data: object) -> R:
    """Unpickle a record (its ``__setattr__`` refuses the default way)."""
    return cls._read(data)


def _dump(value: object) -> object:
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, list):
        return [_dump(item) for item in value]
    if isinstance(value, dict):
        return {key: _dump(item) for key, item in value.items()}
    return value


def _kind(value: object) -> str:
    return "null" if value is None else type(value).__name__


# --- checks, one per kind of field type --------------------------------------------------------


def text(value: object) -> str:
    """A string."""
    if not isinstance(value, str):
        raise Unreadable(f"expected a string, got {_kind(value)}")
    return value


def integer(value: object) -> int:
    """An integer (a float with no fraction, or a boolean, as pydantic's lax mode reads them)."""
    if not isinstance(value, int | float):
        raise Unreadable(f"expected an integer, got {_kind(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise Unreadable(f"expected an integer, got {value!r}")
    return int(value)


def number(value: object) -> float:
    """A number, as a float (a boolean too, as pydantic's lax mode reads it)."""
    if not isinstance(value, int | float):
        raise Unreadable(f"expected a number, got {_kind(value)}")
    return float(value)


def boolean(value: object) -> bool:
    """``true`` or ``false`` (or 0 and 1, as pydantic's lax mode reads them)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    raise Unreadable(f"expected true or false, got {value!r}")


def anything(value: object) -> object:
    """Any JSON value (pydantic's ``JsonValue``)."""
    return value


def optional(check: Check) -> Check:
    """``null`` or what ``check`` reads."""

    def read(value: object) -> object:
        return None if value is None else check(value)

    return read


def list_of(check: Check) -> Check:
    """A list of what ``check`` reads."""

    def read(value: object) -> list[object]:
        if not isinstance(value, list):
            raise Unreadable(f"expected a list, got {_kind(value)}")
        found = []
        for i, item in enumerate(value):
            try:
                found.append(check(item))
            except Unreadable as exc:
                raise Unreadable(f"[{i}]: {exc}") from None
        return found

    return read


def dict_of(check: Check) -> Check:
    """An object of string keys to what ``check`` reads."""

    def read(value: object) -> dict[str, object]:
        if not isinstance(value, dict):
            raise Unreadable(f"expected an object, got {_kind(value)}")
        found = {}
        for key, item in value.items():
            try:
                found[key] = check(item)
            except Unreadable as exc:
                raise Unreadable(f"[{key!r}]: {exc}") from None
        return found

    return read


def record(cls: type[Record]) -> Check:
    """A nested record."""
    return cls._read


def parser(check: Check, name: str) -> Callable[[object], Any]:
    """A whole answer read with ``check`` (a list of records, an object of JSON values);
    :class:`~corral.exceptions.CorralError` naming ``name`` when it does not match."""

    def parse(data: object) -> object:
        try:
            return check(data)
        except Unreadable as exc:
            raise exceptions.CorralError(
                f"the server sent a {name} the client cannot read: {exc}"
            ) from None

    return parse
