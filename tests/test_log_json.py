"""Issue 15: the JSON log format, record by record (app.telemetry.logformat), and its selection."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from app import redact
from app.telemetry import logformat
from app.cli import main, setup_logging
from app.errors import HeraldError

SECRET = "json-log-s3cret-value-4711"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    redact.register(SECRET)
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logformat.JsonFormatter())
    handler.addFilter(redact.RedactingFilter())
    log = logging.getLogger("herald.test.jsonlog")
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    log.propagate = False
    try:
        yield out
    finally:
        log.removeHandler(handler)
        log.propagate = True
        redact._SECRETS.discard(SECRET)
        logformat.bind()


def lines(out: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_one_object_per_line_with_the_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("herald.test.jsonlog")
    log.info("plain %s line", "first")
    log.warning("multi\nline", extra={"event_id": "e-1", "route": "r", "action": "a"})
    first, second = lines(captured)
    assert first["level"] == "INFO" and first["logger"] == "herald.test.jsonlog"
    assert first["message"] == "plain first line" and "event_id" not in first
    assert str(first["time"]).endswith("Z") and len(str(first["time"])) == len("2026-01-01T00:00:00.000Z")
    assert second == {**second, "level": "WARNING", "message": "multi\nline", "event_id": "e-1", "route": "r",
                      "action": "a"}


def test_bound_fields_are_per_task(captured: io.StringIO) -> None:
    log = logging.getLogger("herald.test.jsonlog")

    async def work(event_id: str, pause: float) -> None:
        logformat.bind(event_id=event_id, action="hook")
        await asyncio.sleep(pause)
        log.info("delivered %s", event_id)

    async def both() -> None:
        await asyncio.gather(work("e-a", 0.02), work("e-b", 0.0))

    asyncio.run(both())
    logformat.bind(event_id="e-outer")
    log.info("explicit wins", extra={"event_id": "e-extra"})
    logformat.bind()
    log.info("nothing bound")
    got = lines(captured)
    assert {(g["message"], g["event_id"]) for g in got[:2]} == {("delivered e-a", "e-a"), ("delivered e-b", "e-b")}
    assert got[2]["event_id"] == "e-extra"
    assert "event_id" not in got[3] and "action" not in got[3]


def test_secret_redacted_in_message_fields_and_traceback(captured: io.StringIO) -> None:
    log = logging.getLogger("herald.test.jsonlog")
    try:
        token = SECRET  # noqa: F841 - in the frame
        raise ValueError(f"bad token {SECRET}")
    except ValueError:
        log.exception("delivery failed with %s", SECRET, extra={"route": f"r-{SECRET}"}, stack_info=True)
    text = captured.getvalue()
    assert SECRET not in text
    (record,) = lines(captured)
    assert record["message"] == "delivery failed with ***" and record["route"] == "r-***"
    assert "Traceback (most recent call last)" in str(record["exception"])
    assert "ValueError: bad token ***" in str(record["exception"])
    assert "Stack (most recent call last)" in str(record["stack"])


def test_format_selection(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("HERALD_LOG_FORMAT", raising=False)
    assert logformat.log_format(None) == "text"
    assert logformat.log_format("json") == "json"
    monkeypatch.setenv("HERALD_LOG_FORMAT", "JSON")
    assert logformat.log_format(None) == "json"
    assert logformat.log_format("text") == "text"  # the flag wins
    monkeypatch.setenv("HERALD_LOG_FORMAT", "xml")
    with pytest.raises(HeraldError, match="HERALD_LOG_FORMAT: unknown log format 'xml'"):
        logformat.log_format(None)
    # the command line: a bad environment value is one line and exit 2, a bad flag argparse's error
    assert main(["worker", "--config", "/nonexistent.yaml"]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: HERALD_LOG_FORMAT: unknown log format 'xml' (expected one of: text, json)")
    with pytest.raises(SystemExit) as exc:
        main(["bridge", "--log-format", "yaml"])
    assert exc.value.code == 2
    assert "--log-format: invalid choice: 'yaml'" in capsys.readouterr().err


def test_setup_logging_switches_the_root_handler() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        setup_logging(False, "json")
        assert isinstance(root.handlers[0].formatter, logformat.JsonFormatter)
        setup_logging(True, "text")
        assert not isinstance(root.handlers[0].formatter, logformat.JsonFormatter)
        assert root.level == logging.DEBUG
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
