"""Secrets registered with the redactor reach neither a log line (tracebacks included) nor a
dead-letter record."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from app import redact
from app.cli import setup_logging
from app.messages import DeadLetter

SECRET = "hunter2-redact-test-s3cret"


@pytest.fixture
def secret() -> str:
    redact.register(SECRET)
    yield SECRET
    redact._SECRETS.discard(SECRET)


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch):
    """The root handler setup_logging installs, writing to a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    setup_logging()
    yield buf
    root.handlers[:] = handlers
    root.setLevel(level)


def test_secret_not_in_logged_traceback(secret: str, captured: io.StringIO) -> None:
    log = logging.getLogger("herald.test.redact")
    try:
        token = secret
        raise RuntimeError(f"login failed with token {token}")
    except RuntimeError:
        log.exception("delivery failed for %s", secret)
    log.warning("with stack %s", "x", stack_info=True)
    out = captured.getvalue()
    assert "Traceback" in out and "RuntimeError: login failed with token ***" in out
    assert "delivery failed for ***" in out
    assert "Stack (most recent call last)" in out
    assert secret not in out


def test_secret_not_in_stack_info_locals_or_exc_text(secret: str, captured: io.StringIO) -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "boom", None, None)
    record.exc_text = f"Traceback: {secret}"
    record.stack_info = f"Stack: {secret}"
    logging.getLogger().handlers[0].handle(record)
    out = captured.getvalue()
    assert secret not in out and "Traceback: ***" in out and "Stack: ***" in out


def test_formatter_alone_redacts() -> None:
    redact.register(SECRET)
    try:
        fmt = redact.RedactingFormatter("%(message)s")
        try:
            raise ValueError(SECRET)
        except ValueError:
            import sys

            record = logging.LogRecord("x", logging.ERROR, __file__, 1, "m %s", (SECRET,), sys.exc_info())
        out = fmt.format(record)
        assert SECRET not in out and "ValueError: ***" in out
        assert SECRET not in (record.exc_text or "")
    finally:
        redact._SECRETS.discard(SECRET)


def test_dead_letter_fields_redacted(secret: str) -> None:
    original = {"content": {"description": f"token={secret}"}, "event": {"k": [secret, 1]}, secret: "key"}
    dl = DeadLetter(
        stage="webhook", error=f"HTTP 401 for https://x/?t={secret}", error_type="PermanentActionError",
        attempts=3, first_attempt_at=1.0, last_attempt_at=2.0, source_topic="herald.action.webhook",
        source_partition=0, source_offset=5, event_id=f"e-{secret}", status=401, original=original,
    )
    raw = dl.to_json()
    assert secret.encode() not in raw
    data = orjson.loads(raw)
    assert data["error"] == "HTTP 401 for https://x/?t=***"
    assert data["event_id"] == "e-***"
    assert data["original"]["content"]["description"] == "token=***"
    assert data["original"]["event"]["k"] == ["***", 1]
    assert data["status"] == 401 and data["attempts"] == 3


def test_dead_letter_raw_text_original_redacted(secret: str) -> None:
    dl = DeadLetter("router", "boom", "InternalError", 1, 1.0, 1.0, "herald.events", 0, 1,
                    original=f'{{"password": "{secret}"}}')
    assert secret.encode() not in dl.to_json()
    assert DeadLetter.from_json(dl.to_json()).original == '{"password": "***"}'


def test_dead_letter_unchanged_without_secrets() -> None:
    dl = DeadLetter("a", "boom", "E", 1, 1.0, 2.0, "t", 0, 5, "e1", 400, {"x": ["y"]})
    assert orjson.loads(dl.to_json())["original"] == {"x": ["y"]}
