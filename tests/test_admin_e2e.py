"""The worker's admin listener on real processes and a real broker: probes, metrics, the reload
endpoint behind the bridge's authentication, and the non-loopback rule."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.harness import ROOT, Herald, Sink

TOKEN = "admin-test-token-1"
HMAC_KEY = "admin-test-hmac-key"


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read()
            return resp.status, raw, dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:  # not listening (yet)
        return 0, str(exc).encode(), {}


def as_json(raw: bytes) -> Any:
    return json.loads(raw)


def config(sink: Sink, auth: dict[str, Any] | None = None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "routes": [{"name": "all", "actions": ["sink"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "sink", "type": "webhook", "enable": True, "url": sink.url + "/events"}],
    }
    if auth is not None:
        cfg["herald"] = {"auth": auth}
    return cfg


def test_probes_metrics_and_reload_without_auth(kafka: Any, tmp_path: Path) -> None:
    with Sink() as sink, Herald(kafka, config(sink), tmp_path, bridge=False) as herald:
        admin = herald.admin_url()
        status, raw, _ = request(admin + "/healthz")
        assert status == 200 and as_json(raw) == {"status": "ok"}
        status, raw, _ = request(admin + "/readyz")
        assert status == 200, raw
        assert as_json(raw) == {"status": "ready"}
        status, raw, _ = request(admin + "/metrics")
        # /metrics is app.telemetry.metrics' Prometheus text, with the worker's own series
        assert status == 200, raw[:300]
        assert b"# TYPE herald_" in raw and b"process_resident_memory_bytes" in raw, raw[:300]
        # no herald.auth and a loopback listener: POST /reload is open, like the bridge
        status, raw, _ = request(admin + "/reload", "POST")
        assert status == 200, raw
        body = as_json(raw)
        assert body["status"] == "reloaded" and body["config_hash"] == body["previous_hash"]
        assert "config reloaded (POST /reload" in herald.log_text("worker")
        assert request(admin + "/nope")[0] == 404
        assert request(admin + "/reload")[0] == 405  # GET on the reload path


def test_reload_needs_the_bridge_credentials(kafka: Any, tmp_path: Path) -> None:
    auth = {"bearer-tokens": [TOKEN], "hmac-keys": [HMAC_KEY]}
    with Sink() as sink, Herald(kafka, config(sink, auth), tmp_path, bridge=False) as herald:
        admin = herald.admin_url()
        status, raw, headers = request(admin + "/reload", "POST")
        assert status == 401 and as_json(raw) == {"error": "unauthorized"}
        assert headers.get("WWW-Authenticate") == "Bearer"
        status, raw, _ = request(admin + "/reload", "POST", headers={"Authorization": "Bearer wrong"})
        assert status == 403 and as_json(raw) == {"error": "forbidden"}
        status, raw, _ = request(admin + "/reload", "POST", b"{}", {"X-Hub-Signature-256": "sha256=" + "0" * 64})
        assert status == 403 and as_json(raw) == {"error": "forbidden"}
        status, raw, _ = request(admin + "/reload", "POST", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and as_json(raw)["status"] == "reloaded", raw
        body = b"{}"
        signature = hmac.new(HMAC_KEY.encode(), body, hashlib.sha256).hexdigest()
        status, raw, _ = request(admin + "/reload", "POST", body, {"X-Hub-Signature-256": f"sha256={signature}"})
        assert status == 200 and as_json(raw)["status"] == "reloaded", raw
        # the probes and metrics stay unauthenticated
        assert request(admin + "/healthz")[0] == 200
        assert request(admin + "/readyz")[0] == 200
        log = herald.log_text("worker")
        assert "admin: 401 POST /reload" in log and "admin: 403 POST /reload" in log
        assert TOKEN not in log and HMAC_KEY not in log


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_non_loopback_admin_without_auth_is_refused(kafka: Any, tmp_path: Path) -> None:
    import os

    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(yaml.safe_dump({
        "routes": [], "templates": [], "actions": [],
        "herald": {"kafka-bootstrap-servers": kafka.bootstrap, "topic-prefix": "tadminexp.",
                   "admin-listen": "0.0.0.0:0"},
    }))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "KAFKA_", "POSTEE_"))}
    res = run_cli(["worker", "--config", str(cfg_path)], env)
    assert res.returncode == 2, res.stderr
    assert "herald.admin-listen 0.0.0.0:0 is not a loopback address" in res.stderr
    assert "Traceback" not in res.stderr
    # the environment variable is the same setting
    res = run_cli(["worker", "--config", str(cfg_path)], {**env, "HERALD_ADMIN_LISTEN": "10.1.2.3:8083"})
    assert res.returncode == 2 and "herald.admin-listen 10.1.2.3:8083" in res.stderr, res.stderr


def test_admin_port_in_use_stops_the_worker_with_a_clear_error(kafka: Any, tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken, Sink() as sink:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        herald = Herald(kafka, config(sink), tmp_path, bridge=False, workers=0,
                        env={"HERALD_ADMIN_LISTEN": f"127.0.0.1:{port}"})
        proc = herald._spawn("worker", "worker")
        assert proc.wait(60) == 2
        log = herald.log_text("worker")
        assert f"herald.admin-listen: cannot listen on 127.0.0.1:{port}" in log, log[-2000:]
        assert "Traceback" not in log


def test_check_config_refuses_an_exposed_admin_listener(tmp_path: Path) -> None:
    import os

    cfg_path = tmp_path / "cfg.yaml"
    base = {"routes": [], "templates": [], "actions": []}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "KAFKA_", "POSTEE_"))}
    cfg_path.write_text(yaml.safe_dump({**base, "herald": {"admin-listen": "0.0.0.0:8083"}}))
    res = run_cli(["check-config", str(cfg_path)], env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "error: herald.admin-listen 0.0.0.0:8083 is not a loopback address" in res.stdout
    cfg_path.write_text(yaml.safe_dump({**base, "herald": {"admin-listen": "0.0.0.0:8083",
                                                           "auth": {"bearer-tokens": [TOKEN]}}}))
    res = run_cli(["check-config", str(cfg_path)], env)
    assert res.returncode == 0, res.stdout + res.stderr
