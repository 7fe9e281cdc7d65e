"""The guard on system-changing actions (issue 13) on the real pipeline: bridge and worker
processes on the session broker, an exec script writing a file and HTTP actions hitting a sink.

- An event posted to the bridge without credentials does not fire the routes with exec or http
  POST actions: the decision record names the route, the guarded actions and why, and their
  action topics and the sink stay empty (checked after a trusted event went through the same
  routes, so "nothing yet" cannot pass for "nothing"). Routes with only http GET and webhook
  actions fire, and so does the route with ``allow-unauthenticated-actions: true``.
- An event produced to the events topic directly (no bridge headers) fires every route.
- With ``herald.auth``, bearer-authenticated and HMAC-signed events fire every route.
- The worker's start log warns once per guarded route when the bridge has no authentication,
  and about the opt-out whenever it is used.
- ``herald replay`` of the events topic applies the same guard (the bridge headers are kept).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from app.devtools.kafka_local import LocalKafka
from tests.harness import ROOT, Herald, Sink, wait_until

TOKEN = "guard-e2e-bearer-7c2d9e"
HMAC_KEY = "guard-e2e-hmac-key-41af"
GUARDED = {"r-exec": ["run-script"], "r-post": ["post-ticket"]}
ALL_ROUTES = {"r-exec", "r-post", "r-get", "r-hook", "r-optout"}
FAST = {"enable": True, "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}


def guard_config(sink: Sink, out: Path) -> dict[str, Any]:
    body = '{"kind": "event.input.kind"}'
    return {
        "routes": [
            {"name": "r-exec", "actions": ["run-script"], "template": "raw"},
            {"name": "r-post", "actions": ["post-ticket"], "template": "raw"},
            {"name": "r-get", "actions": ["get-lookup"], "template": "raw"},
            {"name": "r-hook", "actions": ["hook"], "template": "raw"},
            {"name": "r-optout", "actions": ["post-anyway"], "template": "raw", "allow-unauthenticated-actions": True},
        ],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [
            {"name": "run-script", "type": "exec", **FAST,
             "exec-script": f'printf "%s" "$POSTEE_EVENT" > {out}/exec-$$.json'},  # one file per run
            {"name": "post-ticket", "type": "http", **FAST, "url": sink.url + "/post", "method": "POST",
             "body-content": body},
            {"name": "get-lookup", "type": "http", **FAST, "url": sink.url + "/get", "method": "GET"},
            {"name": "hook", "type": "webhook", **FAST, "url": sink.url + "/hook"},
            {"name": "post-anyway", "type": "http", **FAST, "url": sink.url + "/optout", "method": "POST",
             "body-content": body},
        ],
    }


def expect_all(sink: Sink) -> None:
    for path in ("/post", "/optout"):
        sink.expect(path, method="POST", json=True)
    sink.expect("/get", method="GET")
    sink.expect("/hook", method="POST", json=True)


def event_ids(sink: Sink, path: str) -> set[str]:
    """Event ids of the http action requests on ``path`` (from their Idempotency-Key)."""
    return {r.headers["Idempotency-Key"].split(":")[0] for r in sink.requests.get(path, [])}


def hook_kinds(sink: Sink) -> set[str]:
    return {json.loads(r.body).get("kind") for r in sink.requests.get("/hook", [])}


def exec_kinds(out: Path) -> set[str]:
    """The ``kind`` of every event the exec script ran for (one file per run)."""
    return {json.loads(path.read_text())["kind"] for path in out.glob("exec-*.json")}


def action_event_ids(herald: Herald, action: str) -> set[str]:
    return {m["event_id"] for m in herald.read_topic(f"action.{action}")}


def produce_directly(herald: Herald, kafka: LocalKafka, event: dict[str, Any]) -> str:
    """Produce ``event`` to the events topic with no bridge header; returns its event id (the
    worker uses ``topic-partition-offset`` when the producer sets no ``herald-event-id``)."""
    event_id = uuid.uuid4().hex
    producer = Producer(kafka.client_config())
    producer.produce(herald.prefix + "events", value=json.dumps(event).encode(), key=event_id.encode(),
                     headers=[("herald-event-id", event_id.encode())])
    assert producer.flush(30) == 0, "the direct event was not acknowledged"
    return event_id


def fired_routes(decision: dict[str, Any]) -> set[str]:
    return {a["route"] for a in decision["actions"]}


def test_unauthenticated_bridge_events_skip_guarded_routes_and_direct_kafka_events_fire(
        kafka: LocalKafka, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with Sink() as sink:
        expect_all(sink)
        with Herald(kafka, guard_config(sink, out), tmp_path) as herald:
            status, body = herald.post({"kind": "unauthenticated"})
            assert status == 200, body
            unauth = body["event_id"]
            decision = herald.wait_decision(unauth)
            assert decision["origin"] == "bridge" and decision["authenticated"] == ""
            assert {g["route"]: g["actions"] for g in decision["guarded"]} == GUARDED
            reasons = {g["route"]: g["reason"] for g in decision["guarded"]}
            assert reasons["r-exec"] == (
                "not fired: actions run-script (exec) can change systems and the event was posted to the "
                "bridge without authentication; send it with credentials (herald.auth) or produce it to Kafka")
            assert reasons["r-post"].startswith("not fired: actions post-ticket (http POST) can change systems")
            assert all(decision["routes"][r]["matched"] for r in GUARDED)
            assert fired_routes(decision) == {"r-get", "r-hook", "r-optout"}

            # the same routes fire for an event produced to Kafka directly ...
            direct = produce_directly(herald, kafka, {"kind": "direct"})
            direct_decision = herald.wait_decision(direct)
            assert direct_decision["origin"] == "kafka" and direct_decision["guarded"] == []
            assert fired_routes(direct_decision) == ALL_ROUTES
            for action in ("run-script", "post-ticket", "get-lookup", "hook", "post-anyway"):
                herald.wait_deliveries(direct, action, timeout=60)
            # ... and, once it was delivered, nothing of the unauthenticated one reached them
            assert event_ids(sink, "/post") == {direct}
            assert exec_kinds(out) == {"direct"}
            assert action_event_ids(herald, "run-script") == {direct}
            assert action_event_ids(herald, "post-ticket") == {direct}
            # the unguarded routes and the opted-out one fired for both
            herald.wait_deliveries(unauth, "get-lookup", timeout=60)
            herald.wait_deliveries(unauth, "hook", timeout=60)
            herald.wait_deliveries(unauth, "post-anyway", timeout=60)
            assert event_ids(sink, "/get") == {unauth, direct}
            assert event_ids(sink, "/optout") == {unauth, direct}
            assert hook_kinds(sink) == {"unauthenticated", "direct"}

            # a Bearer header does nothing when the bridge has no authentication configured
            status, body = herald.post({"kind": "unchecked-token"}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200
            unchecked = herald.wait_decision(body["event_id"])
            assert unchecked["authenticated"] == "" and set(GUARDED) == {g["route"] for g in unchecked["guarded"]}

            # herald replay reads the bridge headers back from the events topic: the same guard
            replay = subprocess.run([sys.executable, "-m", "app.cli", "replay", "--config", str(herald.cfg_path),
                                     "--since", "1h", "--format", "json"], cwd=ROOT, env=herald.env, check=False,
                                    capture_output=True, text=True, timeout=120)
            assert replay.returncode == 0, replay.stderr
            assert json.loads(replay.stdout)["actions"] == {
                "get-lookup": 3, "hook": 3, "post-anyway": 3, "post-ticket": 1, "run-script": 1}
            log = herald.log_text("worker")
    # one start warning per guarded route, one for the opt-out, none for the unguarded routes
    warnings = [line for line in log.splitlines() if " WARNING " in line and "route r-" in line]
    assert len(warnings) == 3, warnings
    assert sum("route r-exec: its actions run-script (exec) can change systems, and herald.auth configures "
               "no authentication" in w for w in warnings) == 1
    assert sum("route r-post: its actions post-ticket (http POST) can change systems" in w for w in warnings) == 1
    assert sum("route r-optout: allow-unauthenticated-actions is true: its actions post-anyway (http POST)"
               in w for w in warnings) == 1


def test_bearer_and_hmac_authenticated_bridge_events_fire_every_route(kafka: LocalKafka, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with Sink() as sink:
        expect_all(sink)
        cfg = guard_config(sink, out)
        cfg["herald"] = {"auth": {"bearer-tokens": [TOKEN], "hmac-keys": [HMAC_KEY]}}
        with Herald(kafka, cfg, tmp_path) as herald:
            assert herald.post({"kind": "no-credentials"})[0] == 401  # the bridge refuses it outright
            status, body = herald.post({"kind": "bearer"}, headers={"Authorization": f"Bearer {TOKEN}"})
            assert status == 200, body
            by_bearer = body["event_id"]
            raw = json.dumps({"kind": "hmac"}).encode()
            signature = "sha256=" + hmac.new(HMAC_KEY.encode(), raw, hashlib.sha256).hexdigest()
            status, body = herald.post(raw, headers={"X-Hub-Signature-256": signature})
            assert status == 200, body
            by_hmac = body["event_id"]
            for event_id, method in ((by_bearer, "bearer"), (by_hmac, "hmac")):
                decision = herald.wait_decision(event_id)
                assert (decision["origin"], decision["authenticated"]) == ("bridge", method)
                assert decision["guarded"] == [] and fired_routes(decision) == ALL_ROUTES
                for action in ("run-script", "post-ticket", "get-lookup", "hook", "post-anyway"):
                    herald.wait_deliveries(event_id, action, timeout=60)
            assert event_ids(sink, "/post") == {by_bearer, by_hmac}
            wait_until(lambda: exec_kinds(out) == {"bearer", "hmac"}, 30, "both events in the exec log")
            log = herald.log_text("worker")
    # the bridge authenticates: only the opt-out is worth a warning
    assert "configures no authentication" not in log
    assert log.count("route r-optout: allow-unauthenticated-actions is true") == 1
