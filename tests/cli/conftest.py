"""Fixtures for the CLI tests: a real server on a free loopback port, and in-process apps."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from serving import asgi, config, server

__all__ = ["asgi", "config", "server"]


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """Put the root logger back after each test: ``corral serve`` run by CliRunner points it at
    CliRunner's stderr, closed once the command ends, and the in-process servers of later tests
    would then log into a closed file (and their errors into the next command's stderr)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
