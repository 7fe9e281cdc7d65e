"""Secrets never appear in logs, errors or dead-letter records.

Every secret Herald loads is registered here; ``redact`` replaces each occurrence in a text,
and ``RedactingFilter`` applies it to every log record.
"""

from __future__ import annotations

import logging

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


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            record.msg = redact(record.getMessage())
            record.args = None
        return True
