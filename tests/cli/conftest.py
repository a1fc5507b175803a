"""Fixtures for the CLI tests: a real server on a free loopback port, and in-process apps."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "api"))

from serving import asgi, config, server

__all__ = ["asgi", "config", "server"]
