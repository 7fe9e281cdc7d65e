"""Issue 15: ``herald run --log-format json`` on a real broker: every stderr line of the run and of
its bridge and worker is one JSON object, an event's lines carry its event id, no secret shows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT, Sink, free_port, wait_until

TOKEN = "bearer-" + uuid.uuid4().hex  # a secret: herald.auth's bearer token


def post(url: str, body: dict[str, Any], token: str = TOKEN) -> tuple[int, Any]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (urllib.error.URLError, ConnectionError) as exc:
        return 0, str(exc)


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            record = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line {n} is not JSON: {line!r}") from None
        assert isinstance(record, dict) and {"time", "level", "logger", "message"} <= set(record), line
        out.append(record)
    return out


def test_run_logs_one_json_object_per_line_with_event_ids(kafka: Any, tmp_path: Path) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    port = free_port()
    sink = Sink()
    sink.script("/flaky", [500], then=200)  # one failed attempt: an INFO retry line about the event
    sink.script("/refused", [], then=400)  # a dead letter: a WARNING line about the event
    fast = {"retry-initial-backoff": "0.05s", "retry-max-backoff": "0.1s", "timeout": "5s"}
    cfg = {
        "herald": {"kafka-bootstrap-servers": kafka.bootstrap, "topic-prefix": prefix,
                   "consumer-group": f"herald-{prefix.rstrip('.')}", "partitions": 3,
                   "http-listen": f"127.0.0.1:{port}", "auth": {"bearer-tokens": [TOKEN]}},
        "routes": [{"name": "r-json", "actions": ["flaky", "refused"], "template": "raw"}],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": n, "type": "webhook", "enable": True, "url": f"{sink.url}/{n}", **fast}
                    for n in ("flaky", "refused")],
    }
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "POSTEE_HTTP", "HERALD_TOPIC_PREFIX", "POSTEE_CFG",
                        "HERALD_LOG_FORMAT")}
    env.update(PYTHONUNBUFFERED="1", HERALD_ADMIN_LISTEN="127.0.0.1:0")
    stderr = tmp_path / "run.stderr"
    with sink, open(stderr, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "run", "--config", str(cfg_path),
                                 "--log-format", "json"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=err, start_new_session=True)
        try:
            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"herald run exited with {proc.returncode}:\n{stderr.read_text()[-3000:]}")
                if "herald worker ready" not in stderr.read_text(errors="replace"):
                    return False
                try:
                    # 200 also while spooling: wait until the bridge writes to Kafka (an event then gets 200, not 202)
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as resp:
                        return resp.status == 200 and json.loads(resp.read()).get("kafka") == "reachable"
                except (urllib.error.URLError, ConnectionError):
                    return False

            wait_until(ready, 90, "herald run to be ready")
            assert post(f"http://127.0.0.1:{port}/", {"probe": 1}, token="wrong")[0] == 403
            status, answer = post(f"http://127.0.0.1:{port}/", {"kind": "json-log"})
            assert status == 200, answer
            event_id = answer["event_id"]
            sink.wait_for("/flaky", 2)
            sink.wait_for("/refused", 1)

            def logged() -> list[dict[str, Any]]:
                return [r for r in records(stderr) if r.get("event_id") == event_id and r.get("action") == "refused"
                        and "dead-lettered" in r["message"]]

            wait_until(logged, 30, "the dead-letter line of the event")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(60)
    assert code == 0, stderr.read_text()[-3000:]
    got = records(stderr)  # every line, shutdown included, is a JSON object
    mine = [r for r in got if r.get("event_id") == event_id]
    retry = [r for r in mine if r["logger"] == "herald.runner" and "retrying" in r["message"]]
    assert len(retry) == 1 and retry[0]["action"] == "flaky" and retry[0]["route"] == "r-json"
    assert retry[0]["level"] == "INFO"
    dead = [r for r in mine if "dead-lettered" in r["message"]]
    assert len(dead) == 1 and dead[0]["level"] == "WARNING" and dead[0]["action"] == "refused"
    # lines of each process: the run's own, the bridge's and the worker's
    loggers = {r["logger"] for r in got}
    assert {"herald", "herald.bridge", "herald.worker"} <= loggers, loggers
    assert any(r["message"].startswith("Herald is starting") for r in got)
    assert "rejected (forbidden)" in " ".join(r["message"] for r in got if r["logger"] == "herald.bridge")
    assert TOKEN not in stderr.read_text()
    # per-event logs stay at debug: nothing at INFO quotes the event itself
    assert not [r for r in got if "json-log" in json.dumps(r)], "the event's content was logged"
    assert all(r["level"] != "DEBUG" for r in got)
