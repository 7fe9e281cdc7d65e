"""Secrets never appear in logs, errors or dead-letter records.

Every secret Herald loads is registered here; ``redact`` replaces each occurrence in a text,
``RedactingFilter`` applies it to every log record's message and ``RedactingFormatter`` to the
whole formatted line (message, traceback and stack), so ``log.exception`` cannot leak a secret
through an exception's text or a frame's repr either.
"""

from __future__ import annotations

import logging
from typing import Any

_SECRETS: set[str] = set()
MASK = "***"


def register(value: str) -> None:
    if value and len(value) >= 3:
        _SECRETS.add(value)


def redact(text: str) -> str:
    for secret in sorted(_SECRETS, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def redact_value(value: Any) -> Any:
    """``value`` with every string in it redacted (dicts, lists and tuples walked; keys too)."""
    if not _SECRETS:
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_value(k): redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True


class RedactingFormatter(logging.Formatter):
    """A formatter whose whole output is redacted: message, ``exc_text`` and ``stack_info``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))

    def formatException(self, ei: Any) -> str:  # noqa: N802 - logging's name
        # exc_text is cached on the record and reused by other handlers: cache it redacted
        return redact(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:  # noqa: N802 - logging's name
        return redact(super().formatStack(stack_info))
