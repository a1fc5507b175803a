"""The client's records, generated from corral.wire: current, and reading JSON as the models do.

What each test catches: a field added to a wire model but the generator not run (the client
would silently drop it), a record check that accepts what the model refuses or refuses what it
accepts (a check loosened or tightened in ``corral.client.record``, a type mapped wrongly by the
generator), a default that differs from the model's, a record that can be changed or that
pickles wrongly.
"""

from __future__ import annotations

import pickle
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from corral import exceptions, wire
from corral.client import generate, record, records

MODELS = generate.wire_models()

PROBES: list[object] = [
    None,
    "x",
    "",
    0,
    7,
    2.0,
    1.0,
    0.0,
    -1,
    2.5,
    True,
    False,
    [],
    ["x"],
    [None],
    [1],
    {},
    {"k": "v"},
    {"k": 1},
    {"k": None},
]
"""JSON values tried in every field. Numeric strings (``"7"``) are left out: pydantic's lax mode
reads them as numbers, the records do not, and the server never sends one."""


def _sample(model: type[BaseModel]) -> dict[str, Any]:
    """The smallest valid JSON of ``model``: its required fields, from the probes."""
    data: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.is_required():
            data[name] = _valid(model, data, name)
    return data


def _valid(model: type[BaseModel], data: dict[str, Any], name: str) -> object:
    nested = {m.__name__: m for m in MODELS}
    annotation = model.model_fields[name].annotation
    if isinstance(annotation, type) and annotation.__name__ in nested:
        return _sample(nested[annotation.__name__])
    for probe in PROBES:
        try:
            model.model_validate({**data, name: probe})
        except ValidationError as exc:
            if any(error["loc"][:1] == (name,) for error in exc.errors()):
                continue
        return probe
    raise AssertionError(f"no probe fits {model.__name__}.{name}")


def test_the_generated_module_is_current() -> None:
    """Fails when a wire model changed and ``python -m corral.client.generate`` was not run."""
    assert records.__file__ == str(generate.TARGET)
    assert generate.TARGET.read_text() == generate.source(), (
        "corral/client/records.py is stale: run python -m corral.client.generate"
    )


def test_every_answer_model_has_its_record() -> None:
    assert {m.__name__ for m in MODELS} >= {"Ticket", "VM", "PoolStatus", "Task", "Host"}
    for model in MODELS:
        made = getattr(records, model.__name__)
        assert [name for name, _, _ in made.FIELDS] == list(model.model_fields)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_defaults_are_the_models(model: type[BaseModel]) -> None:
    data = _sample(model)
    made = getattr(records, model.__name__).from_json(data)
    assert made.to_json() == model.model_validate(data).model_dump(mode="json")


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_each_field_reads_what_the_model_reads(model: type[BaseModel]) -> None:
    """Every probe in every field: the record refuses exactly what the model refuses (as a
    CorralError naming the model and the field), and reads the rest to the same JSON."""
    made = getattr(records, model.__name__)
    base = _sample(model)
    for name in model.model_fields:
        for probe in PROBES:
            data = {**base, name: probe}
            try:
                expected = model.model_validate(data).model_dump(mode="json")
            except ValidationError:
                with pytest.raises(exceptions.CorralError, match=f"{model.__name__}.*{name}"):
                    made.from_json(data)
                continue
            assert made.from_json(data).to_json() == expected, (name, probe)
        missing = {k: v for k, v in base.items() if k != name}
        if model.model_fields[name].is_required():
            with pytest.raises(exceptions.CorralError, match=f"{name}: missing"):
                made.from_json(missing)


def test_unknown_fields_are_ignored_and_not_an_object_is_refused() -> None:
    ticket = records.Ticket.from_json(
        {"id": "t", "owner": "o", "state": "assigned", "from_a_newer_server": 1}
    )
    assert ticket.to_json() == wire.Ticket(id="t", owner="o", state="assigned").model_dump(
        mode="json"
    )
    with pytest.raises(exceptions.CorralError, match=r"Ticket.*expected an object"):
        records.Ticket.from_json(["t"])


def test_records_are_immutable_values() -> None:
    ticket = records.Ticket(id="t", owner="o", state="assigned", tags=["a"])
    same = records.Ticket.from_json({"id": "t", "owner": "o", "state": "assigned", "tags": ["a"]})
    assert ticket == same and ticket != records.Ticket(id="t", owner="o", state="closed")
    assert records.Ticket(id="t", owner="o", state="x").tags == []
    assert records.PoolStatus(name="p", backend="fake", max=1, max_starting=1, min_ready=0).stats
    with pytest.raises(AttributeError, match="immutable"):
        ticket.state = "closed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ticket.unknown = 1  # type: ignore[attr-defined]
    assert pickle.loads(pickle.dumps(ticket)) == ticket  # noqa: S301 - our own bytes
    assert "state='assigned'" in repr(ticket)


def test_a_list_answer_names_the_bad_item() -> None:
    parse = record.parser(record.list_of(record.record(records.VM)), "list[VM]")
    good = {"name": "v", "pool": "p", "state": "ready"}
    assert parse([good])[0].name == "v"
    with pytest.raises(exceptions.CorralError, match=r"list\[VM\].*\[1\]: state: missing"):
        parse([good, {"name": "w", "pool": "p"}])
