"""The test harness's own guards (no broker): the sink refuses and reports requests no test
expected, and Herald's teardown fails on bad exit codes and on tracebacks nobody declared."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.harness import Herald, Sink, traceback_groups


def send(sink: Sink, path: str, body: bytes = b"{}", method: str = "POST",
         content_type: str = "application/json") -> int:
    req = urllib.request.Request(sink.url + path, data=body, method=method, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_sink_without_expectations_accepts_anything() -> None:
    with Sink() as sink:
        assert send(sink, "/any", b"not json", method="PUT", content_type="text/plain") == 200
    assert sink.count("/any") == 1 and sink.unexpected == []


def test_sink_refuses_and_reports_what_no_expectation_allows() -> None:
    sink = Sink()
    sink.expect("/hook", method="POST", content_type="application/json", json=True)
    sink.script("/flaky", [500])
    with pytest.raises(AssertionError, match="4 unexpected request"), sink:
        assert send(sink, "/hook", b'{"a": 1}', content_type="application/json; charset=utf-8") == 200
        assert send(sink, "/flaky", b"x", content_type="text/plain") == 500  # scripts imply POST only
        assert send(sink, "/flaky") == 200
        assert send(sink, "/hook", b"{not json") == 400
        assert send(sink, "/hook", b"{}", method="PUT") == 405
        assert send(sink, "/hook", b"{}", content_type="text/plain") == 415
        assert send(sink, "/elsewhere") == 404
    assert [(u.method, u.path) for u in sink.unexpected] == [
        ("POST", "/hook"), ("PUT", "/hook"), ("POST", "/hook"), ("POST", "/elsewhere")]
    assert "not JSON" in sink.unexpected[0].reason and "no expectation" in sink.unexpected[3].reason
    assert sink.count("/hook") == 1 and sink.count("/flaky") == 2  # refused requests are not counted


def test_sink_does_not_hide_the_failure_already_propagating() -> None:
    sink = Sink()
    sink.expect("/hook")
    with pytest.raises(ZeroDivisionError) as info, sink:
        send(sink, "/other")
        1 / 0  # noqa: B018
    assert any("unexpected request" in note for note in info.value.__notes__)


def test_sink_wait_for_fails_fast_on_an_unexpected_request() -> None:
    sink = Sink()
    sink.expect("/hook", json=True)
    with pytest.raises(AssertionError), sink:
        send(sink, "/hook", b"<html>")
        with pytest.raises(AssertionError, match="unexpected request"):
            sink.wait_for("/hook", 1, timeout=30)


LOG = """\
[2026-01-01 00:00:00,000] [1] [INFO] herald worker ready
[2026-01-01 00:00:01,000] [1] [ERROR] router failed on t.events[0]@3
Traceback (most recent call last):
  File "agents/worker.py", line 1, in route_one
    raise KeyError("a")
KeyError: 'a'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File "agents/worker.py", line 2, in route_one
    raise RuntimeError("b")
RuntimeError: b
[2026-01-01 00:00:02,000] [1] [INFO] still going
[2026-01-01 00:00:03,000] [1] [ERROR] delivery failed
Traceback (most recent call last):
  File "actions/base.py", line 3, in send
    raise ValueError("c")
ValueError: c
"""


def test_traceback_groups_keep_chains_together_with_the_log_line_before() -> None:
    first, second = traceback_groups(LOG)
    assert first.startswith("[2026-01-01 00:00:01,000] [1] [ERROR] router failed")
    assert "KeyError: 'a'" in first and first.endswith("RuntimeError: b")
    assert second.startswith("[2026-01-01 00:00:03,000]") and second.endswith("ValueError: c")


def fake_herald(tmp_path: Path) -> Herald:
    return Herald(SimpleNamespace(bootstrap="127.0.0.1:9"), {}, tmp_path)


def spawn(herald: Herald, name: str, code: str, log: str = "") -> subprocess.Popen[bytes]:
    path = herald.workdir / f"{name}.log"
    path.write_text(log)
    herald.logs[name] = path
    proc = subprocess.Popen([sys.executable, "-c", code])
    herald.procs[name] = proc
    herald.spawned.append((name, proc))
    return proc


SERVE = "import time\nwhile True: time.sleep(0.1)"
ON_TERM_EXIT_3 = "import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n" + SERVE


def test_herald_teardown_checks_exit_codes(tmp_path: Path) -> None:
    herald = fake_herald(tmp_path)
    spawn(herald, "clean", SERVE)  # SIGTERM at teardown: killed by the signal, -15, is a failure too
    spawn(herald, "bad-term", ON_TERM_EXIT_3)
    spawn(herald, "crashed", "import sys; sys.exit(2)").wait(10)
    spawn(herald, "killed", SERVE)
    spawn(herald, "fine", "import sys; sys.exit(0)").wait(10)
    assert herald.stop("killed", signal.SIGKILL) == -9
    with pytest.raises(AssertionError) as info:
        herald.__exit__(None, None, None)
    text = str(info.value)
    assert "clean (pid" in text and "exited with -15 after SIGTERM" in text
    assert "bad-term (pid" in text and "exited with 3 after SIGTERM" in text
    assert "crashed (pid" in text and "exited on its own with 2" in text
    assert "killed (pid" not in text and "fine (pid" not in text


def test_herald_teardown_fails_on_undeclared_tracebacks_only(tmp_path: Path) -> None:
    herald = fake_herald(tmp_path)
    spawn(herald, "worker", "pass", LOG).wait(10)
    herald.expect_traceback("router failed")
    with pytest.raises(AssertionError) as info:
        herald.__exit__(None, None, None)
    assert "1 unexpected traceback(s) in the worker log" in str(info.value)
    assert "ValueError: c" in str(info.value) and "KeyError" not in str(info.value).split("log tail:")[0]
    herald.expect_traceback("ValueError: c")
    herald.__exit__(None, None, None)


def test_herald_teardown_adds_its_report_to_a_failure_in_flight(tmp_path: Path) -> None:
    herald = fake_herald(tmp_path)
    spawn(herald, "worker", "import sys; sys.exit(1)").wait(10)
    error = ValueError("the test's own failure")
    herald.__exit__(ValueError, error, None)  # does not raise: that would hide the test's failure
    assert any("exited on its own with 1" in note for note in error.__notes__)


def test_read_topic_raises_when_min_count_is_not_reached(kafka: object, tmp_path: Path) -> None:
    herald = Herald(kafka, {}, tmp_path)
    assert herald.read_topic("nothing-here") == []
    with pytest.raises(AssertionError, match=r"nothing-here: wanted at least 1 record\(s\) within 1s, got 0"):
        herald.read_topic("nothing-here", min_count=1, timeout=1)
    with pytest.raises(AssertionError, match="the decision on event x"):
        herald.wait_decision("x", timeout=1)
    assert json.dumps(herald.problems()) == "[]"
