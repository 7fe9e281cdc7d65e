"""Issue 15: the bridge's and the worker's /metrics, scraped after a real pipeline run.

A real broker, a real bridge and worker, a loopback sink. Every event's path through the pipeline
is known in advance, so each counter must move by exactly the expected amount; the scrapes are
parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness import Herald, Sink, wait_until

FAST = {"retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s", "timeout": "5s"}

AGG_TEMPLATE = """package herald.metrics.agg
title := sprintf("item %v", [input.n])
result := sprintf("event %v", [input.n])
aggregation_pkg := "herald.metrics.agg.aggregation"
"""
AGG_AGGREGATION = """package herald.metrics.agg.aggregation
title := sprintf("%d events", [count(input)])
result := concat("|", [d | d := input[_].description])
"""
# renders no title for any event: every event of its route is a template error
BROKEN_TEMPLATE = 'package herald.metrics.broken\nresult := "no title"\n'

ROUTES = ["r-all", "r-crit", "r-dead", "r-filt", "r-tpl", "r-dedup", "r-agg"]
ACTIONS = ["a-ok", "a-flaky", "a-dead", "a-dup", "a-agg"]


def hook(name: str, sink: Sink, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "enable": True, "url": f"{sink.url}/{name}", **FAST, **extra}


def config(sink: Sink, tdir: Path) -> dict[str, Any]:
    return {
        "herald": {"template-dirs": [str(tdir)]},
        "routes": [
            {"name": "r-all", "actions": ["a-ok"], "template": "raw"},
            {"name": "r-crit", "input": 'input.severity == "critical"', "actions": ["a-flaky"], "template": "raw"},
            {"name": "r-dead", "input": 'input.kind == "dead"', "actions": ["a-dead"], "template": "raw"},
            # to_number("abc") is an evaluation error: the route does not match and it is counted
            {"name": "r-filt", "input": "to_number(input.x) > 1", "actions": ["a-ok"], "template": "raw"},
            {"name": "r-tpl", "input": 'input.kind == "tpl"', "actions": ["a-ok"], "template": "broken"},
            {"name": "r-dedup", "input": 'input.kind == "dup"', "actions": ["a-dup"], "template": "raw",
             "plugins": {"unique-message-props": ["id"]}},
            {"name": "r-agg", "input": 'input.kind == "agg"', "actions": ["a-agg"], "template": "agg",
             "plugins": {"aggregate-message-number": 2}},
        ],
        "templates": [
            {"name": "raw", "rego-package": "postee.rawmessage.json"},
            {"name": "broken", "body": BROKEN_TEMPLATE},
            {"name": "agg", "rego-package": "herald.metrics.agg"},
        ],
        "actions": [hook("a-ok", sink), hook("a-flaky", sink), hook("a-dead", sink, **{"retry-max-attempts": 3}),
                    hook("a-dup", sink), hook("a-agg", sink)],
    }


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """(value of every sample by name and labels, type of every family) of ``url``."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")
        text = resp.read().decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def post(herald: Herald, body: dict[str, Any] | bytes, path: str = "/") -> str:
    status, answer = herald.post(body, path)
    assert status == 200, (path, status, answer)
    return str(answer["event_id"])


def test_every_counter_moves_by_exactly_what_the_pipeline_did(kafka: Any, tmp_path: Path) -> None:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "agg.rego").write_text(AGG_TEMPLATE)
    (tdir / "agg-aggregation.rego").write_text(AGG_AGGREGATION)
    sink = Sink()
    for name in ACTIONS:
        sink.expect(f"/{name}", method="POST", content_type="application/json")
    sink.script("/a-flaky", [500, 500], then=200)
    sink.script("/a-dead", [], then=500)
    with sink, Herald(kafka, config(sink, tdir), tmp_path) as herald:
        bridge_url, worker_url = herald.url + "/metrics", herald.admin_url() + "/metrics"  # the worker's admin listener
        before, _ = scrape(worker_url)
        # before any event, every configured route and action is there at zero
        for route in ROUTES:
            assert ("herald_route_events_total", frozenset({"route": route, "matched": "true"}.items())) in before
        for action in ACTIONS:
            for outcome in ("delivered", "failed", "retried", "duplicate_suppressed", "dead_lettered"):
                key = ("herald_deliveries_total", frozenset({"action": action, "outcome": outcome}.items()))
                assert before[key] == 0.0

        for _ in range(3):
            post(herald, {"severity": "low"})
        post(herald, {"severity": "critical"}, "/scan")  # a-flaky: 500, 500, then 200
        post(herald, {"kind": "dead"})  # a-dead: 500 three times, dead-lettered
        post(herald, {"x": "abc"})  # r-filt: filter error
        post(herald, {"x": "5"})  # r-filt matches
        post(herald, {"kind": "tpl"})  # r-tpl matches; its template fails: router dead letter
        post(herald, {"kind": "dup", "id": 1})
        post(herald, {"kind": "dup", "id": 1})  # the duplicate
        post(herald, {"kind": "agg", "n": 1})
        post(herald, {"kind": "agg", "n": 2})  # the batch of two
        post(herald, {"severity": "low"}, "/tenant/r-all")  # only r-all is evaluated
        assert herald.post(b"[1]")[0] == 400
        assert herald.post({"a": 1}, "/tenant/no-such-route")[0] == 404
        routed = 12  # events through POST / and /scan: every route is evaluated
        events = routed + 1

        matched = {"r-all": events, "r-crit": 1, "r-dead": 1, "r-filt": 1, "r-tpl": 1, "r-dedup": 2, "r-agg": 2}
        expected: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {
            ("herald_router_events_total", ()): events,
            ("herald_filter_errors_total", (("route", "r-filt"),)): 1,
            ("herald_template_errors_total", (("route", "r-tpl"),)): 1,
            ("herald_dedup_hits_total", (("route", "r-dedup"),)): 1,
            ("herald_aggregation_batches_total", (("route", "r-agg"),)): 1,
            ("herald_dead_letters_total", (("stage", "router"),)): 1,
            ("herald_dead_letters_total", (("stage", "a-dead"),)): 1,
            ("herald_action_messages_total", (("action", "a-ok"),)): events + 1,  # r-all and r-filt
            ("herald_action_messages_total", (("action", "a-flaky"),)): 1,
            ("herald_action_messages_total", (("action", "a-dead"),)): 1,
            ("herald_action_messages_total", (("action", "a-dup"),)): 1,
            ("herald_action_messages_total", (("action", "a-agg"),)): 1,
            ("herald_delivery_latency_seconds_count", (("action", "a-ok"),)): events + 1,
            ("herald_delivery_attempt_duration_seconds_count", (("action", "a-flaky"),)): 3,
            ("herald_delivery_attempt_duration_seconds_count", (("action", "a-dead"),)): 3,
            ("herald_delivery_latency_seconds_count", (("action", "a-dead"),)): 0,
        }
        for route in ROUTES:
            evaluated = events if route == "r-all" else routed
            expected[("herald_route_events_total", (("route", route), ("matched", "true")))] = matched[route]
            expected[("herald_route_events_total", (("route", route), ("matched", "false")))] = \
                evaluated - matched[route]
        outcomes = {
            "a-ok": {"delivered": events + 1},
            "a-flaky": {"delivered": 1, "failed": 2, "retried": 2},
            "a-dead": {"failed": 3, "retried": 2, "dead_lettered": 1},
            "a-dup": {"delivered": 1},
            "a-agg": {"delivered": 1},
        }
        for action, counts in outcomes.items():
            for outcome in ("delivered", "failed", "retried", "duplicate_suppressed", "dead_lettered"):
                expected[("herald_deliveries_total", (("action", action), ("outcome", outcome)))] = \
                    counts.get(outcome, 0)

        def differences() -> list[str]:
            now, _ = scrape(worker_url)
            return [f"{name}{dict(labels)}: {value(now, name, **dict(labels))} != {want}"
                    for (name, labels), want in expected.items() if value(now, name, **dict(labels)) != want]

        sink.wait_for("/a-dead", 3)
        sink.wait_for("/a-agg", 1)
        try:
            wait_until(lambda: not differences(), 60, "the worker's counters to reach the expected values")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n" + "\n".join(differences())) from None
        time.sleep(2)  # nothing more moves: exactly these amounts, not more
        assert differences() == []
        assert sink.count("/a-ok") == events + 1 and sink.count("/a-flaky") == 3

        # the bridge: requests by endpoint template and status, latencies, Kafka writes
        bridge, types = scrape(bridge_url)
        assert value(bridge, "herald_bridge_requests_total", endpoint="/", status="200") == routed - 1
        assert value(bridge, "herald_bridge_requests_total", endpoint="/scan", status="200") == 1
        assert value(bridge, "herald_bridge_requests_total", endpoint="/tenant/{route}", status="200") == 1
        assert value(bridge, "herald_bridge_requests_total", endpoint="/", status="400") == 1
        assert value(bridge, "herald_bridge_requests_total", endpoint="/tenant/{route}", status="404") == 1
        assert value(bridge, "herald_bridge_request_duration_seconds_count", endpoint="/") == routed
        assert value(bridge, "herald_bridge_request_duration_seconds_count", endpoint="/tenant/{route}") == 2
        assert value(bridge, "herald_bridge_kafka_write_duration_seconds_count") == events
        assert value(bridge, "herald_bridge_kafka_write_duration_seconds_bucket", le="+Inf") == events
        # the spool (on by default): empty, with its bound
        assert value(bridge, "herald_bridge_spool_events") == 0 and value(bridge, "herald_bridge_spool_bytes") == 0
        assert value(bridge, "herald_bridge_spool_max_bytes") > 0
        assert types["herald_bridge_requests"] == "counter"
        assert types["herald_bridge_request_duration_seconds"] == "histogram"
        assert types["herald_consumer_lag_messages"] == "gauge"

        # consumer lag: each assigned partition of the events topic, 0 once everything is committed
        events_topic = herald.prefix + "events"

        def lag_of_events() -> dict[str, float] | None:
            now, _ = scrape(worker_url)
            lags = {dict(labels)["partition"]: v for (name, labels), v in now.items()
                    if name == "herald_consumer_lag_messages" and dict(labels)["topic"] == events_topic}
            return lags if sorted(lags) == ["0", "1", "2"] and all(v == 0 for v in lags.values()) else None

        try:
            wait_until(lag_of_events, 40, "a lag of 0 on every partition of the events topic")
        except AssertionError:
            now, _ = scrape(worker_url)
            raise AssertionError("lag samples: " + repr({k: v for k, v in now.items()
                                                         if k[0] == "herald_consumer_lag_messages"})) from None

        # bounded labels: only config names, endpoint templates, status codes, topics and partitions
        final, _ = scrape(worker_url)
        for name, labels in {**final, **bridge}:
            if not name.startswith("herald_"):
                continue
            for key, val in labels:
                allowed = {"route": ROUTES, "action": ACTIONS, "stage": ["router", *ACTIONS],
                           "endpoint": ["/", "/scan", "/tenant/{route}"], "matched": ["true", "false"],
                           "outcome": list(outcomes["a-flaky"]) + ["dead_lettered", "duplicate_suppressed"]}
                if key in allowed:
                    assert val in allowed[key], (name, key, val)
                elif key == "topic":
                    assert val.startswith(herald.prefix), (name, val)
                else:
                    assert key in ("status", "partition", "le"), (name, key, val)
