"""Server logging: timestamps, levels, text or JSON lines (``serve --log-level --log-format``).

The loggers an operator reads: ``corral.decisions`` (one line per spawn, assignment, release,
expiry, termination of a VM or ticket, and every task change, with the ids), ``corral.access`` (one
line per request, never a header or a token) and the modules' own warnings. This module must not
log anything itself: it only configures the root handler.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import TextIO

from corral import exceptions

LEVELS = ("debug", "info", "warning", "error")
"""The accepted ``--log-level`` values."""

FORMATS = ("text", "json")
"""The accepted ``--log-format`` values."""

TEXT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(name)s: %(message)s"
"""One text line: UTC timestamp with milliseconds, level, logger, message."""


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``message``."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one JSON line (with ``exc`` when an exception is attached)."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (not the one at configuration
    time, which a test harness or a daemoniser may have closed and replaced since)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        """The current ``sys.stderr``."""
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always the current sys.stderr


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of ``text`` or ``json`` (``ConfigError`` otherwise)."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        text = logging.Formatter(TEXT, datefmt="%Y-%m-%dT%H:%M:%S")
        text.converter = time.gmtime
        return text
    raise exceptions.ConfigError(f"--log-format must be one of {', '.join(FORMATS)}, not {fmt!r}")


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send every log record at ``level`` or above to ``stream`` (stderr) in format ``fmt``.

    Replaces the root logger's handlers, so calling it again changes the level or format.
    """
    name = level.lower()
    if name not in LEVELS:
        raise exceptions.ConfigError(
            f"--log-level must be one of {', '.join(LEVELS)}, not {level!r}"
        )
    handler: logging.Handler = logging.StreamHandler(stream) if stream else _Stderr()
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(name.upper())
    # alembic tells every plugin it loads at info; its migrations still show at debug
    logging.getLogger("alembic").setLevel("DEBUG" if name == "debug" else "WARNING")
