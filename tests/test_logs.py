"""Server logging: formats, levels, the access log (no tokens) and the decision lines."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from corral import exceptions, logs
from corral.api import stream
from corral.controller.events import Event


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_a_utc_timestamp_and_the_level(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("info", "json", stream=out)
    logging.getLogger("corral.decisions").info("vm=a state=ready")
    logging.getLogger("corral.x").debug("not shown at info")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 1
    assert lines[0]["level"] == "info" and lines[0]["logger"] == "corral.decisions"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", lines[0]["ts"])


def test_text_lines_and_levels(restore_root: None) -> None:
    out = io.StringIO()
    logs.configure("warning", "text", stream=out)
    logging.getLogger("corral.a").info("hidden")
    logging.getLogger("corral.a").warning("shown")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARNING corral\.a: shown\n", out.getvalue()
    )


def test_bad_level_or_format_is_refused_and_changes_nothing(restore_root: None) -> None:
    before = list(logging.getLogger().handlers)
    with pytest.raises(exceptions.ConfigError, match=r"--log-level.*'loud'"):
        logs.configure("loud")
    with pytest.raises(exceptions.ConfigError, match=r"--log-format.*'xml'"):
        logs.configure("info", "xml")
    assert logging.getLogger().handlers == before


def test_a_decision_line_names_the_ids(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral.decisions")
    event = Event("vm", "small-000001", "in_use", 1.0, {"pool": "small", "ticket": "t1"})
    stream.log_decision(event, None)
    stream.log_decision(Event("ticket", "t1", "assigned", 1.0, {"vm": "small-000001"}), "alice")
    assert caplog.messages == [
        "vm=small-000001 state=in_use pool=small ticket=t1",
        "ticket=t1 state=assigned vm=small-000001 owner=alice",
    ]


def test_stderr_is_the_current_one_not_the_one_at_configuration(
    restore_root: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    logs.configure("info")
    first.close()  # a harness or a daemoniser replaced it since
    second = io.StringIO()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("corral.x").warning("still written")
    assert "WARNING corral.x: still written" in second.getvalue()
