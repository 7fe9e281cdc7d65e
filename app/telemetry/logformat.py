"""Log formats: today's text lines, or one JSON object per line (``--log-format json``,
``HERALD_LOG_FORMAT=json``).

A JSON line holds ``time`` (RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, and
``event_id``, ``route`` and ``action`` when the line is about one event: given with
``extra={"event_id": ...}`` at the log call, or bound for the current task with ``bind`` (the worker
binds them while it routes or delivers an event, the bridge while it takes one). A traceback is
the ``exception`` field, a stack the ``stack`` field. Every string is redacted (``app.redact``)
before it is encoded, so a secret never reaches the output, traceback included.
"""

from __future__ import annotations

import logging
import os
import time
from contextvars import ContextVar
from typing import Any

import orjson

from app.errors import HeraldError
from app.redact import RedactingFormatter, redact

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CONTEXT_FIELDS = ("event_id", "route", "action")

_context: ContextVar[dict[str, str | None] | None] = ContextVar("herald_log_context", default=None)


def bind(**fields: str | None) -> None:
    """``event_id``/``route``/``action`` of the event the current task works on (empty ones are
    not shown; ``bind()`` clears). Each asyncio task has its own binding. Called per event: it only
    keeps the arguments; the formatter reads them when a line is actually written."""
    _context.set(fields or None)


def log_format(flag: str | None) -> str:
    """The format from ``--log-format`` or else ``HERALD_LOG_FORMAT``; ``text`` by default."""
    value = flag if flag is not None else os.environ.get("HERALD_LOG_FORMAT", "") or "text"
    value = value.strip().lower()
    if value not in FORMATS:
        source = "--log-format" if flag is not None else "HERALD_LOG_FORMAT"
        raise HeraldError(f"{source}: unknown log format {value!r} (expected one of: {', '.join(FORMATS)})")
    return value


class JsonFormatter(logging.Formatter):
    """One redacted JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        bound = _context.get()
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None) or (bound or {}).get(key)
            if value:
                out[key] = redact(str(value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exception"] = redact(record.exc_text)
        if record.stack_info:
            out["stack"] = redact(self.formatStack(record.stack_info))
        return orjson.dumps(out).decode()

    def formatException(self, ei: Any) -> str:  # logging's name
        # exc_text is cached on the record and reused by other handlers: cache it redacted
        return redact(super().formatException(ei))


def formatter(fmt: str) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else RedactingFormatter(TEXT_FORMAT)
