"""Issue 2 acceptance on a real broker: bridge -> events -> router -> action topics -> agents -> sinks/DLQ."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Producer

from actions import parse_config
from app.routing.router import EventMeta, Router
from tests.harness import FIXTURES, Herald, Sink


def webhook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "enable": True, "url": url, "timeout": "5s", **extra}


def pipeline_config(sink: Sink) -> dict[str, Any]:
    fast = {"retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}
    return {
        "herald": {"body-limit": "64KiB"},
        "routes": [
            {"name": "r-all", "actions": ["a-all"], "template": "raw-json"},
            {"name": "r-critical", "input": "input.vulnerability_summary.critical > 100",
             "actions": ["a-never"], "template": "raw-json"},
            {"name": "r-tenant", "input": 'contains(input.image, "all-in-one")', "actions": ["a-tenant"],
             "template": "raw-html"},
            {"name": "r-flaky", "input": 'input.kind == "flaky"', "actions": ["a-flaky"], "template": "raw-json"},
            {"name": "r-broken", "input": 'input.kind == "broken"', "actions": ["a-500", "a-400"],
             "template": "raw-json"},
        ],
        "templates": [
            {"name": "raw-json", "rego-package": "postee.rawmessage.json"},
            {"name": "raw-html", "rego-package": "postee.rawmessage.html"},
        ],
        "actions": [
            webhook("a-all", sink.url + "/all"),
            webhook("a-never", sink.url + "/never"),
            webhook("a-tenant", sink.url + "/tenant"),
            webhook("a-flaky", sink.url + "/flaky", **fast),
            webhook("a-500", sink.url + "/always500", **{"retry-max-attempts": 3}, **fast),
            webhook("a-400", sink.url + "/bad400", **fast),
            {"name": "disabled-one", "type": "webhook", "enable": False, "url": sink.url + "/disabled"},
        ],
    }


@pytest.fixture(scope="module", params=["plaintext", "sasl-ssl"])
def broker(request: pytest.FixtureRequest) -> Any:
    """Every pipeline test runs on the plain broker and on the SASL_SSL (SCRAM-SHA-512) one: bridge,
    worker and the test's own clients all take the broker's ``herald.kafka`` settings."""
    return request.getfixturevalue("kafka" if request.param == "plaintext" else "secure_kafka")


@pytest.fixture(scope="module")
def sink(broker: Any) -> Iterator[Sink]:  # a fresh sink (and scripts) per broker
    with Sink() as s:
        # the webhook action POSTs the rendering as application/json (Postee's wire format), also
        # when the template renders HTML (r-tenant)
        for path in ("/all", "/never", "/flaky", "/always500", "/bad400"):
            s.expect(path, method="POST", content_type="application/json", json=True)
        s.expect("/tenant", method="POST", content_type="application/json")
        s.script("/flaky", [500, 500], then=200)
        s.script("/always500", [], then=500)
        s.script("/bad400", [], then=400)
        yield s


@pytest.fixture(scope="module")
def herald(broker: Any, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    with Herald(broker, pipeline_config(sink), tmp_path_factory.mktemp("pipeline")) as h:
        yield h


def expected_rendering(cfg: dict[str, Any], route: str, event: bytes) -> str:
    router = Router(parse_config(cfg))
    result = router.route(event, EventMeta("x"))
    return result.rendered[route].description


def test_aqua_event_is_routed_to_every_matching_route(herald: Herald, sink: Sink) -> None:
    event = (FIXTURES / "postee" / "aqua-input.json").read_bytes()
    status, body = herald.post(event)
    assert status == 200 and len(body["event_id"]) == 32
    event_id = body["event_id"]
    # the router's decision on this very event: what matched, and the messages it sent
    decision = herald.wait_decision(event_id)
    assert {name: route["matched"] for name, route in decision["routes"].items()} == {
        "r-all": True, "r-critical": False, "r-tenant": True, "r-flaky": False, "r-broken": False}
    assert decision["routes"]["r-critical"]["reason"]
    assert sorted((a["route"], a["action"]) for a in decision["actions"]) == [
        ("r-all", "a-all"), ("r-tenant", "a-tenant")]
    # the matching routes' deliveries of this event are done ...
    herald.wait_deliveries(event_id, "a-all")
    herald.wait_deliveries(event_id, "a-tenant")
    got = sink.wait_for("/all", 1)
    assert got[0].body.decode() == expected_rendering(pipeline_config(sink), "r-all", event)
    assert got[0].headers["Content-Type"] == "application/json"
    tenant = sink.wait_for("/tenant", 1)
    assert tenant[0].body.decode().startswith("<pre><code>{")
    # ... and the route whose input does not match sent nothing at all
    assert herald.read_topic("action.a-never") == []
    assert [d for d in herald.read_topic("deliveries") if d["action"] == "a-never"] == []
    assert sink.count("/never") == 0


def test_tenant_endpoint_runs_only_that_route(herald: Herald, sink: Sink) -> None:
    event = (FIXTURES / "postee" / "aqua-input.json").read_bytes()
    all_before, tenant_before = sink.count("/all"), sink.count("/tenant")
    status, body = herald.post(event, "/tenant/r-tenant")
    assert status == 200
    decision = herald.wait_decision(body["event_id"])
    assert list(decision["routes"]) == ["r-tenant"]
    assert decision["actions"] == [{"route": "r-tenant", "action": "a-tenant"}]
    herald.wait_deliveries(body["event_id"], "a-tenant")
    sink.wait_for("/tenant", tenant_before + 1)
    assert [d for d in herald.read_topic("deliveries") if d["event_id"] == body["event_id"]
            and d["action"] != "a-tenant"] == []
    assert sink.count("/all") == all_before
    status, body = herald.post(event, "/tenant/no-such-route")
    assert status == 404 and "no-such-route" in body["error"]


def test_failing_sink_is_retried_then_delivered_once(herald: Herald, sink: Sink) -> None:
    status, body = herald.post({"kind": "flaky", "id": 1})
    assert status == 200
    herald.wait_deliveries(body["event_id"], "a-flaky")  # the attempt that succeeded is recorded
    got = sink.wait_for("/flaky", 3)
    assert len(got) == 3  # 500, 500, then 200: delivered once, after two retries
    deliveries = herald.wait_deliveries(body["event_id"], "a-flaky", count=3, outcome=None)
    assert [d["outcome"] for d in deliveries] == ["failed", "failed", "delivered"]
    assert herald.read_topic("dlq.a-flaky") == []


def test_permanent_and_exhausted_failures_become_one_dead_letter_each(herald: Herald, sink: Sink) -> None:
    status, body = herald.post({"kind": "broken", "id": 2})
    assert status == 200
    sink.wait_for("/always500", 3)
    sink.wait_for("/bad400", 1)
    dlq500 = herald.read_topic("dlq.a-500", min_count=1)
    dlq400 = herald.read_topic("dlq.a-400", min_count=1)
    assert len(dlq500) == 1 and len(dlq400) == 1
    assert dlq500[0]["attempts"] == 3 and dlq500[0]["status"] == 500
    assert "HTTP 500" in dlq500[0]["error"] and dlq500[0]["error_type"] == "RetryableActionError"
    assert dlq400[0]["attempts"] == 1 and dlq400[0]["status"] == 400
    assert dlq400[0]["error_type"] == "PermanentActionError"
    assert dlq400[0]["event_id"] == body["event_id"]
    assert dlq400[0]["original"]["content"]["description"] == json.dumps(
        {"id": 2, "kind": "broken", "postee": {"AquaServer": ""}}, indent=1, sort_keys=True
    )
    assert dlq400[0]["source_topic"] == herald.prefix + "action.a-400"
    # the worker keeps going: a later event is delivered
    before = sink.count("/all")
    assert herald.post({"kind": "after"})[0] == 200
    sink.wait_for("/all", before + 1)
    # nothing more arrived at the dead sinks (exactly one attempt series)
    assert sink.count("/always500") == 3 and sink.count("/bad400") == 1


def test_bad_input_is_rejected_with_a_reason(herald: Herald) -> None:
    status, body = herald.post(b"{not json")
    assert status == 400 and "not valid JSON" in body["error"]
    status, body = herald.post(b"[1, 2]")
    assert status == 400 and "JSON object" in body["error"]
    status, body = herald.post(b'{"big": "' + b"x" * 70_000 + b'"}')
    assert status == 413 and "65536" in body["error"]
    status, body = herald.get("/ping")
    assert status == 200 and body == "Postee alive!"
    assert herald.get("/healthz")[0] == 200


def test_events_published_straight_to_kafka_are_routed(herald: Herald, sink: Sink, broker: Any) -> None:
    producer = Producer(broker.client_config())
    before = sink.count("/all")
    producer.produce(herald.prefix + "events", value=b'{"direct": true}')
    producer.produce(herald.prefix + "events", value=b"this is not json")
    producer.flush(10)
    got = sink.wait_for("/all", before + 1)
    assert any(json.loads(r.body).get("direct") is True for r in got)
    dead = herald.read_topic("dlq.router", min_count=1)
    assert any(d["error_type"] == "EventError" and d["original"] == "this is not json" for d in dead)
    assert all(d["source_topic"] == herald.prefix + "events" for d in dead)
