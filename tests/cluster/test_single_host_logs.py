"""A host whose store is its own (SQLite) has no cluster to speak of: its membership and
leadership news is logged at debug level, not at the default info level a new user reads.
Breakage caught: the news logged at info whatever the store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from corral.backends import validate_options
from corral.backends.fake import FakeBackend
from corral.config import parse_config
from corral.controller import Controller


async def test_a_single_host_keeps_cluster_news_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = {"backend": {"type": "fake"}, "max": 1, "min_ready": 0}
    cfg = parse_config({"store": f"sqlite:///{tmp_path}/c.db", "pools": {"p": raw}}, env={})
    fake = FakeBackend(validate_options("fake", {"seed": 1}), pool="p")
    caplog.set_level(logging.DEBUG)
    ctl = await Controller.create(cfg, backends={"p": fake}, tick=0.05)
    try:
        await ctl.start()
        assert ctl.leads("p")
    finally:
        await ctl.stop()
    news = [r for r in caplog.records if r.getMessage().startswith("cluster: host ")]
    assert news, "the membership and leadership news is still logged"
    loud = [r.getMessage() for r in news if r.levelno >= logging.INFO]
    assert not loud, f"cluster news at info on a single host: {loud}"
