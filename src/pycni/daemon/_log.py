"""The agent's logs: JSON lines on stderr, and the per-call stderr a shim passes on.

A plugin run by its own executable has no logging configured, so its warnings reach stderr
through :data:`logging.lastResort` as bare messages. In the agent, :class:`CallLog` collects
the same lines for the call running on the current thread, so the shim writes what the
standalone plugin would have written; they also go to the agent's log with the call's
context.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the record's ``fields`` extra."""

    def format(self, record: logging.LogRecord) -> str:
        """The line for ``record`` (tracebacks go in ``exc``)."""
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class CallLog(logging.Handler):
    """Collects WARNING+ messages logged on a thread while it runs a call."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._local = threading.local()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the bare message (lastResort's format) if this thread is capturing."""
        lines: list[str] | None = getattr(self._local, "lines", None)
        if lines is not None:
            lines.append(record.getMessage())

    @contextmanager
    def capture(self) -> Iterator[list[str]]:
        """Capture this thread's messages into the yielded list."""
        lines: list[str] = []
        self._local.lines = lines
        try:
            yield lines
        finally:
            self._local.lines = None


def configure(level: int = logging.INFO) -> None:
    """Send every log record to stderr as JSON lines (replacing other root handlers)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(JSONFormatter())
    root.addHandler(stream)
    root.setLevel(level)


__all__ = ["CallLog", "JSONFormatter", "configure"]
