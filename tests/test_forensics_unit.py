"""Timeline building blocks without Kafka: event time, entities, external sort, --where, the join."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from app.forensics import extsort
from app.forensics.entities import entity_extractor, parse_path, severity_of, source_of, title_of
from app.errors import HeraldError
from app.forensics.eventtime import event_time_ns, format_ns, parse_rfc3339_ns, parse_when
from app.forensics.extsort import ExternalSorter
from app.forensics.heraldlog import HeraldLog, summarize
from app.forensics.timeline import WhereFilter
from tests.harness import FIXTURES


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def lines(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (FIXTURES / name).read_text().splitlines() if line.strip()]


# -- event time -------------------------------------------------------------------------------
def test_rfc3339_keeps_nanoseconds_and_offsets() -> None:
    assert parse_rfc3339_ns("2026-11-24T09:02:19.792489123Z") == 1795510939792489123
    assert parse_rfc3339_ns("2026-11-24T09:02:19.792489Z") == 1795510939792489000
    assert parse_rfc3339_ns("2026-11-24T10:02:19+01:00") == 1795510939000000000
    assert parse_rfc3339_ns("2026-11-24T09:02:19") == 1795510939000000000
    assert parse_rfc3339_ns("yesterday") is None
    assert parse_rfc3339_ns("2026-13-40T09:02:19Z") is None
    assert format_ns(1795510939792489123) == "2026-11-24T09:02:19.792489123Z"


def test_event_time_of_each_source() -> None:
    tracee = load("tracee/finding-single.json")
    assert event_time_ns(tracee) == (tracee["Context"]["timestamp"], "Context.timestamp")
    falco = load("falco/event-single.json")
    assert event_time_ns(falco) == (1795510939792489000, "time")
    del falco["time"]
    assert event_time_ns(falco) == (falco["output_fields"]["evt.time"], "output_fields.evt.time")
    aqua = load("postee/aqua-input.json")
    started = aqua["scan_started"]
    assert event_time_ns(aqua) == (started["seconds"] * 10**9 + started["nanos"], "scan_started")
    assert event_time_ns({"SchemaVersion": 2, "CreatedAt": "2024-05-01T10:00:00.5Z"}) == (
        parse_rfc3339_ns("2024-05-01T10:00:00.5Z"), "CreatedAt")
    # a Tracee v0.20+ event carries its nanoseconds at the top level
    assert event_time_ns({"eventName": "openat", "timestamp": 1700000000123456789}) == (1700000000123456789, "timestamp")
    # Aqua's test incident has create_time 0: no usable time, Kafka's is used instead
    assert event_time_ns(load("postee/aqua-incident-input.json")) == (None, "")
    assert event_time_ns(load("postee/trivy-input.json")) == (None, "")


def test_window_bounds_parse_relative_and_absolute_times() -> None:
    now = 1_800_000_000 * 10**9
    assert parse_when("2h", "--since", now) == now - 2 * 3600 * 10**9
    assert parse_when("90m", "--since", now) == now - 90 * 60 * 10**9
    assert parse_when("now", "--until", now) == now
    assert parse_when("2025-11-24T09:00:00Z", "--since", now) == parse_rfc3339_ns("2025-11-24T09:00:00Z")
    with pytest.raises(HeraldError, match=r"--since: expected .*'two hours'"):
        parse_when("two hours", "--since", now)


# -- entities, severity, title ----------------------------------------------------------------
def test_paths_with_dotted_keys_and_indexes() -> None:
    assert parse_path('output_fields["k8s.pod.name"]') == ("output_fields", "k8s.pod.name")
    assert parse_path("input.Results[0].Target") == ("Results", 0, "Target")
    assert parse_path("metadata.labels['app.kubernetes.io/name']") == ("metadata", "labels", "app.kubernetes.io/name")
    with pytest.raises(HeraldError, match="cannot parse the path 'a..b'"):
        parse_path("a..b")


def test_entities_of_every_source_use_the_senders_field_names() -> None:
    tracee, falco = load("tracee/finding-single.json"), load("falco/event-single.json")
    operator, trivy, aqua = load("postee/trivy-operator-input.json"), load("postee/trivy-input.json"), load(
        "postee/aqua-input.json")
    incident = load("postee/aqua-incident-input.json")
    by = {name: entity_extractor(name) for name in ("host", "container", "pod", "namespace", "image")}
    assert [by[n](tracee) for n in by] == ["node-a", "9b8e7d6c5a41", "payments-5d4b", "payments",
                                           "ghcr.io/acme/payments:2.3.1"]
    assert [by[n](falco) for n in by] == ["node-a", "3f1a9c2d7e11", "web-7c9f", "shop", "docker.io/library/nginx:1.25"]
    assert by["image"](operator) == "library/nginx:1.16" and by["namespace"](operator) == "default"
    assert by["pod"](operator) == "nginx-6d4cf56db6"
    assert by["image"](trivy) == "pom.xml" and by["host"](trivy) == ""
    assert by["image"](aqua) == "all-in-one:3.5.19223"
    assert by["host"](incident) == "ubuntu"
    # Tracee v0.20+ events: container and kubernetes objects at the top level
    new = {"eventName": "x", "hostName": "n1", "container": {"id": "c1", "image": "img:1"},
           "kubernetes": {"podName": "p1", "podNamespace": "ns1"}}
    assert [by[n](new) for n in by] == ["n1", "c1", "p1", "ns1", "img:1"]
    assert entity_extractor('output_fields["user.name"]')(falco) == "root"
    assert entity_extractor(None)(falco) == ""


def test_source_severity_and_title() -> None:
    cases = [
        ("tracee/finding-single.json", "tracee", "high", "Cgroups release agent file modification"),
        ("falco/event-single.json", "falco", "critical", "Drop and execute new binary in container"),
        ("postee/trivy-input.json", "trivy", None, "pom.xml"),
        ("postee/trivy-operator-input.json", "trivy-operator", "critical", "replicaset-nginx-6d4cf56db6-nginx"),
        ("postee/aqua-input.json", "aqua", None, "all-in-one:3.5.19223"),
        ("postee/aqua-incident-input.json", "aqua-incident", "high", "test"),
    ]
    for name, source, severity, title in cases:
        event = load(name)
        assert source_of(event) == source, name
        if severity:
            assert severity_of(event, source) == severity, name
        assert title_of(event, source) == title, name
    assert severity_of({"priority": "Notice"}, "falco") == "low"
    assert severity_of({"SigMetadata": {"Properties": {"Severity": 2}}}, "tracee") == "medium"


# -- external sort ----------------------------------------------------------------------------
def test_external_sort_spills_runs_and_merges_them_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(extsort, "FAN_IN", 4)  # force multi-pass merging too
    rng = random.Random(3)
    rows = [[rng.choice("abc"), rng.randrange(10**18, 2 * 10**18), i] for i in range(3000)]
    sorter = ExternalSorter(run_bytes=2000, run_items=10**9)
    for key in rows:
        sorter.add(key, orjson.dumps({"k": key, "text": "tab\there\nnewline"}))
    assert len(sorter.runs) > 16
    out = list(sorter.sorted())
    assert [k for k, _ in out] == sorted(rows)
    assert all(orjson.loads(p)["k"] == k and orjson.loads(p)["text"] == "tab\there\nnewline" for k, p in out)


def test_external_sort_without_spilling() -> None:
    sorter = ExternalSorter()
    for key in ([2, "b"], [1, "z"], [1, "a"]):
        sorter.add(key, b"{}")
    assert [k for k, _ in sorter.sorted()] == [[1, "a"], [1, "z"], [2, "b"]]
    assert sorter.runs == []


# -- --where ----------------------------------------------------------------------------------
def test_where_compiles_once_and_filters_events() -> None:
    where = WhereFilter("input.SigMetadata.Properties.Severity >= 3")
    findings = lines("tracee/findings-timeline.jsonl")
    kept = [f for f in findings if where(json.dumps(f))]
    assert len(kept) == sum(1 for f in findings if f["SigMetadata"]["Properties"]["Severity"] >= 3) > 0
    assert not where(json.dumps(load("falco/event-single.json")))  # undefined is not a match
    multi = WhereFilter('input.priority == "Critical"\ninput.hostname == "node-a"')  # lines are ANDed
    assert multi(json.dumps(load("falco/event-single.json")))
    with pytest.raises(HeraldError, match=r"--where 'input.x ==== 1' does not compile"):
        WhereFilter("input.x ==== 1")


# -- the join ---------------------------------------------------------------------------------
def test_join_tolerates_unknown_and_missing_fields() -> None:
    log = HeraldLog()
    try:
        log.add("decision", "e1", {"event_id": "e1", "routes": {"r": {"matched": True, "reason": "input"}},
                                   "actions": [{"route": "r", "action": "a"}], "dedup": {"outcome": "first"},
                                   "template": "raw-json"})
        log.add("delivery", "e1", {"action": "a", "outcome": "failed", "status": 400})
        log.add("dead_letter", "e1", {"stage": "a", "status": 400})
        log.add("delivery", "e2", {})
        log.finish()
        e1 = log.lookup("e1")
        assert e1["decision"]["dedup"] == {"outcome": "first"} and e1["decision"]["template"] == "raw-json"
        assert summarize(e1) == {"routes_matched": "r", "actions": "r/a", "delivered": "", "dead_letters": "a",
                                 "attempts": 1}
        assert log.lookup("e2") == {"decision": None, "deliveries": [{}], "dead_letters": []}
        assert summarize(log.lookup("nope"))["routes_matched"] == ""
    finally:
        log.close()


def test_falco_fixture_times_are_what_the_timeline_orders_by() -> None:
    # independent of app.forensics.eventtime: Python's own parser, microseconds as in the fixture
    for event in lines("falco/events.jsonl"):
        dt = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
        expected = int(dt.timestamp()) * 10**9 + dt.microsecond * 1000
        assert event_time_ns(event)[0] == expected


def test_tracee_example_config_routes_tracee_and_falco_events() -> None:
    from actions import load_config
    from app.routing.router import EventMeta, Router
    from tests.harness import ROOT

    router = Router(load_config(str(ROOT / "examples" / "tracee-cfg.yaml")))
    assert router.errors == []

    def matched(event: dict[str, Any]) -> set[str]:
        result = router.route(orjson.dumps(event), EventMeta("x"))
        return {name for name, v in result.verdicts.items() if v.matched}

    finding = load("tracee/finding-single.json")
    assert matched(finding) == {"tracee", "tracee-all"}
    finding["SigMetadata"]["Properties"]["Severity"] = 1
    assert matched(finding) == {"tracee-all"}
    falco = lines("falco/events.jsonl")
    assert [matched(e) for e in falco] == [{"falco-critical"} if e["priority"] == "Critical" else set() for e in falco]
