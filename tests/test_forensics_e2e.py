"""Issue 7 acceptance on a real broker: Tracee and Falco events through the bridge, then
``herald timeline`` (JSON Lines, CSV, HTML in headless Chromium) and ``herald replay``."""

from __future__ import annotations

import csv
import io
import json
import random
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import FIXTURES, ROOT, Herald, Sink


def webhook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "enable": True, "url": url, "timeout": "5s",
            "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}


def forensics_config(sink: Sink) -> dict[str, Any]:
    return {
        "routes": [
            {"name": "r-tracee", "input": 'contains(input.SigMetadata.ID, "TRC-")', "actions": ["a-tracee"],
             "template": "raw-json"},
            {"name": "r-falco", "input": 'input.source == "syscall"', "actions": ["a-falco"], "template": "raw-json"},
            {"name": "r-critical", "input": 'input.priority == "Critical"', "actions": ["a-bad"],
             "template": "raw-json"},
        ],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        # a-archive is used by no route yet: the replay test re-drives history into it
        "actions": [webhook("a-tracee", sink.url + "/tracee"), webhook("a-falco", sink.url + "/falco"),
                    webhook("a-bad", sink.url + "/bad400"), webhook("a-archive", sink.url + "/archive")],
    }


def falco_ns(event: dict[str, Any]) -> int:
    dt = datetime.strptime(event["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


class Posted:
    """What the test sent, computed independently of Herald's code."""

    def __init__(self) -> None:
        self.events: dict[str, dict[str, Any]] = {}  # event id -> event
        self.host: dict[str, str] = {}
        self.time: dict[str, int] = {}
        self.kind: dict[str, str] = {}

    def add(self, event_id: str, event: dict[str, Any]) -> None:
        self.events[event_id] = event
        if "SigMetadata" in event:
            self.kind[event_id] = "tracee"
            self.host[event_id] = event["Context"]["hostName"]
            self.time[event_id] = event["Context"]["timestamp"]
        else:
            self.kind[event_id] = "falco"
            self.host[event_id] = event["hostname"]
            self.time[event_id] = falco_ns(event)

    def ids(self, predicate: Any) -> set[str]:
        return {i for i, e in self.events.items() if predicate(e)}


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as s:
        for path in ("/tracee", "/falco", "/bad400", "/archive"):
            s.expect(path, method="POST", content_type="application/json", json=True)
        s.script("/bad400", [], then=400)
        yield s


@pytest.fixture(scope="module")
def live(kafka: Any, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Herald, Posted, dict[str, int]]]:
    lines = (FIXTURES / "tracee" / "findings-timeline.jsonl").read_text().splitlines()
    lines += (FIXTURES / "falco" / "events.jsonl").read_text().splitlines()
    lines = [line for line in lines if line.strip()]
    random.Random(7).shuffle(lines)  # arrival order is not event-time order
    posted = Posted()
    with Herald(kafka, forensics_config(sink), tmp_path_factory.mktemp("forensics")) as herald:
        for line in lines:
            status, body = herald.post(line.encode())
            assert status == 200, body
            posted.add(body["event_id"], json.loads(line))
        n_tracee = sum(1 for k in posted.kind.values() if k == "tracee")
        n_critical = len(posted.ids(lambda e: e.get("priority") == "Critical"))
        sink.wait_for("/tracee", n_tracee)
        sink.wait_for("/falco", len(lines) - n_tracee)
        sink.wait_for("/bad400", n_critical)
        herald.read_topic("decisions", min_count=len(lines))
        herald.read_topic("deliveries", min_count=len(lines) + n_critical)
        herald.read_topic("dlq.a-bad", min_count=n_critical)
        live_counts = {"a-tracee": sink.count("/tracee"), "a-falco": sink.count("/falco"), "a-bad": sink.count("/bad400")}
        yield herald, posted, live_counts


def herald_cli(herald: Herald, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "app.cli", *args, "--config", str(herald.cfg_path)],
                          cwd=ROOT, env=herald.env, capture_output=True, text=True, check=False, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def timeline(herald: Herald, *args: str) -> list[dict[str, Any]]:
    out = herald_cli(herald, "timeline", "--since", "1h", *args).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_timeline_by_host_is_in_event_time_order_with_exact_counts(live: tuple[Herald, Posted, dict[str, int]]) -> None:
    herald, posted, _ = live
    rows = timeline(herald, "--by", "host", "--format", "jsonl")
    assert len(rows) == len(posted.events) == 60
    assert Counter(r["entity"] for r in rows) == Counter(posted.host.values())
    assert Counter(r["entity"] for r in rows) == {"node-a": 23, "node-b": 19, "node-c": 18}
    per_host: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        per_host[row["entity"]].append(row["event_id"])
    for host, ids in per_host.items():
        assert ids == sorted(ids, key=lambda i: posted.time[i]), host
    # rows of one host are contiguous (lanes), and both times are kept
    assert [r["entity"] for r in rows] == sorted(r["entity"] for r in rows)
    for row in rows:
        assert row["event_time_ns"] == posted.time[row["event_id"]]
        assert row["event_time_from"] == ("Context.timestamp" if posted.kind[row["event_id"]] == "tracee" else "time")
        assert row["kafka_time_ns"] != row["event_time_ns"] and row["kafka_time"].endswith("Z")
        assert row["event"] == posted.events[row["event_id"]]


def test_where_filters_by_severity(live: tuple[Herald, Posted, dict[str, int]]) -> None:
    herald, posted, _ = live
    rows = timeline(herald, "--by", "host", "--where", "input.SigMetadata.Properties.Severity >= 3")
    expected = posted.ids(lambda e: e.get("SigMetadata", {}).get("Properties", {}).get("Severity", 0) >= 3)
    assert {r["event_id"] for r in rows} == expected and 0 < len(expected) < 40
    rows = timeline(herald, "--where", 'input.priority == "Critical"', "--by", "container")
    assert {r["event_id"] for r in rows} == posted.ids(lambda e: e.get("priority") == "Critical")
    assert {r["entity"] for r in rows} == {e["output_fields"]["container.id"] for i, e in posted.events.items()
                                           if e.get("priority") == "Critical"}


def test_timeline_shows_decisions_deliveries_and_dead_letters(live: tuple[Herald, Posted, dict[str, int]]) -> None:
    herald, posted, _ = live
    rows = {r["event_id"]: r for r in timeline(herald, "--by", "host", "--with-decisions")}
    critical = sorted(posted.ids(lambda e: e.get("priority") == "Critical"))
    for event_id in critical:
        h = rows[event_id]["herald"]
        routes = h["decision"]["routes"]
        assert routes["r-critical"]["matched"] and routes["r-falco"]["matched"] and not routes["r-tracee"]["matched"]
        assert routes["r-critical"]["reason"]
        assert sorted((a["route"], a["action"]) for a in h["decision"]["actions"]) == [
            ("r-critical", "a-bad"), ("r-falco", "a-falco")]
        outcomes = {(d["action"], d["outcome"]) for d in h["deliveries"]}
        assert outcomes == {("a-falco", "delivered"), ("a-bad", "failed")}
        assert [d["status"] for d in h["deliveries"] if d["action"] == "a-bad"] == [400]
        [dead] = h["dead_letters"]
        assert dead["stage"] == "a-bad" and dead["status"] == 400 and dead["error_type"] == "PermanentActionError"
        assert dead["topic"] == herald.prefix + "dlq.a-bad"
    tracee_id = next(i for i, k in posted.kind.items() if k == "tracee")
    h = rows[tracee_id]["herald"]
    assert [(d["action"], d["outcome"]) for d in h["deliveries"]] == [("a-tracee", "delivered")]
    assert h["dead_letters"] == [] and h["decision"]["routes"]["r-tracee"]["matched"]
    # the same join, flattened for CSV
    out = herald_cli(herald, "timeline", "--since", "1h", "--by", "host", "--with-decisions", "--format", "csv").stdout
    table = {r["event_id"]: r for r in csv.DictReader(io.StringIO(out))}
    assert len(table) == 60
    assert table[critical[0]]["routes_matched"] == "r-critical;r-falco"
    assert table[critical[0]]["dead_letters"] == "a-bad" and table[critical[0]]["delivered"] == "a-falco"
    assert json.loads(table[critical[0]]["event"]) == posted.events[critical[0]]


def test_html_report_in_headless_chromium(live: tuple[Herald, Posted, dict[str, int]], tmp_path: Path) -> None:
    herald, posted, _ = live
    report = tmp_path / "report.html"
    herald_cli(herald, "timeline", "--since", "1h", "--by", "host", "--with-decisions", "--format", "html",
               "--out", str(report))
    setup = subprocess.run([str(ROOT / "scripts" / "browser-setup.sh")], capture_output=True, text=True, check=False, timeout=900)
    assert setup.returncode == 0, f"browser setup failed (Chromium or playwright-core missing):\n{setup.stderr}"
    chromium = setup.stdout.strip().splitlines()[-1]
    critical = min(posted.ids(lambda e: e.get("priority") == "Critical"))
    proc = subprocess.run(
        ["node", "check_report.mjs", str(report), "--click", critical, "--zoom", "0,5",
         "--screenshot", str(tmp_path / "report.png")],
        cwd=ROOT / "tests" / "browser", capture_output=True, text=True, check=False, timeout=180,
        env={**herald.env, "HERALD_CHROMIUM": chromium},
    )
    assert proc.returncode == 0, f"Chromium could not run the report:\n{proc.stderr}\n{proc.stdout}"
    seen = json.loads(proc.stdout)
    assert seen["pageErrors"] == [] and seen["requests"] == []  # self-contained: no network at all
    hosts = Counter(posted.host.values())
    assert [(lane["entity"], lane["events"]) for lane in seen["lanes"]] == sorted(hosts.items())
    details = seen["details"]
    assert details["meta"]["event id"] == critical
    assert details["meta"]["entity"] == posted.host[critical] and details["meta"]["severity"] == "critical"
    assert json.loads(details["json"]) == posted.events[critical]
    tables = details["tables"]
    routes = {row[0]: row[1] for row in tables["Routes"]}
    assert routes == {"r-tracee": "not matched", "r-falco": "matched", "r-critical": "matched"}
    assert {(row[0], row[3]) for row in tables["Delivery attempts"]} == {("a-falco", "delivered"), ("a-bad", "failed")}
    assert [row[4] for row in tables["Delivery attempts"] if row[0] == "a-bad"] == ["400"]
    [dead] = tables["Dead letters"]
    assert dead[:3] == ["a-bad", "PermanentActionError", "400"]
    # dragging over the first 5% of the axis keeps only the earliest events (the 2025 Tracee ones)
    zoomed = {lane["entity"]: lane["visible"] for lane in seen["zoomed"]}
    tracee_hosts = Counter(h for i, h in posted.host.items() if posted.kind[i] == "tracee")
    assert zoomed == dict(tracee_hosts)


def test_replay_dry_run_counts_match_the_live_run(live: tuple[Herald, Posted, dict[str, int]]) -> None:
    herald, _, live_counts = live
    before = len(herald.read_topic("action.a-falco"))
    report = json.loads(herald_cli(herald, "replay", "--since", "1h", "--format", "json").stdout)
    assert report["dry_run"] is True and report["events"] == 60
    assert report["actions"] == live_counts
    assert report["routes"] == {"r-tracee": 40, "r-falco": 20, "r-critical": live_counts["a-bad"]}
    text = herald_cli(herald, "replay", "--since", "1h", "--dry-run").stdout
    assert "r-critical/a-bad" in text and "would fire" in text
    assert len(herald.read_topic("action.a-falco")) == before  # a dry run produces nothing


def test_replay_diff_lists_exactly_the_events_of_the_dropped_route(
        live: tuple[Herald, Posted, dict[str, int]], sink: Sink, tmp_path: Path) -> None:
    herald, posted, _ = live
    cfg = yaml.safe_load(herald.cfg_path.read_text())
    cfg["routes"] = [r for r in cfg["routes"] if r["name"] != "r-critical"]
    other = tmp_path / "without-critical.yaml"
    other.write_text(yaml.safe_dump(cfg))
    report = json.loads(herald_cli(herald, "replay", "--since", "1h", "--diff", str(other), "--format", "json").stdout)
    critical = posted.ids(lambda e: e.get("priority") == "Critical")
    assert {c["event_id"] for c in report["changed"]} == critical
    for change in report["changed"]:
        assert change["routes_removed"] == ["r-critical"] and change["actions_removed"] == ["r-critical/a-bad"]
        assert change["routes_added"] == change["actions_added"] == change["content_changed"] == []
    assert report["b"]["actions"] == {"a-falco": 20, "a-tracee": 40}


def test_replay_to_actions_needs_yes_then_re_drives_history_into_a_new_action(
        live: tuple[Herald, Posted, dict[str, int]], sink: Sink, tmp_path: Path) -> None:
    herald, posted, live_counts = live
    saved = tmp_path / "warnings.jsonl"
    herald_cli(herald, "timeline", "--since", "1h", "--where", 'input.priority == "Warning"', "--out", str(saved))
    warnings = posted.ids(lambda e: e.get("priority") == "Warning")
    # the new destination: r-falco now also goes to a-archive
    cfg = yaml.safe_load(herald.cfg_path.read_text())
    for route in cfg["routes"]:
        if route["name"] == "r-falco":
            route["actions"] = ["a-falco", "a-archive"]
    redrive = tmp_path / "with-archive.yaml"
    redrive.write_text(yaml.safe_dump(cfg))

    def replay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", "replay", "--config", str(redrive), *args],
                              cwd=ROOT, env=herald.env, capture_output=True, text=True, check=False, timeout=300)

    refused = replay("--from-file", str(saved), "--to-actions", "a-archive")
    assert refused.returncode == 1 and "add --yes to confirm" in refused.stderr
    unknown = replay("--from-file", str(saved), "--to-actions", "nope", "--yes")
    assert unknown.returncode == 1 and "unknown or disabled action(s) nope" in unknown.stderr
    assert sink.count("/archive") == 0
    done = replay("--from-file", str(saved), "--to-actions", "a-archive", "--yes", "--format", "json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False and report["sent"] == {"a-archive": len(warnings)}
    assert report["actions"] == {"a-archive": len(warnings), "a-falco": len(warnings)}  # routed, only a-archive sent
    got = sink.wait_for("/archive", len(warnings))
    assert sorted(r.json()["uuid"] for r in got) == sorted(posted.events[i]["uuid"] for i in warnings)
    # the replayed deliveries carry the original event ids, so the timeline joins them
    rows = {r["event_id"]: r for r in timeline(herald, "--with-decisions", "--where", 'input.priority == "Warning"')}
    for event_id in warnings:
        assert ("a-archive", "delivered") in {(d["action"], d["outcome"]) for d in rows[event_id]["herald"]["deliveries"]}
    assert sink.count("/falco") == live_counts["a-falco"]  # nothing else was sent


def test_timeline_spilled_to_many_sorted_runs_gives_the_same_rows(live: tuple[Herald, Posted, dict[str, int]]) -> None:
    from app.forensics.timeline import Stats, TimelineQuery, timeline_rows
    from app.kafka.topics import Topics

    herald, posted, _ = live

    def read(run_bytes: int) -> tuple[list[str], Stats]:
        stats = Stats()
        query = TimelineQuery(herald.kafka.client_config(), Topics(herald.prefix), None, None, by="host",
                              run_bytes=run_bytes)
        return [r["event_id"] for r in timeline_rows(query, stats)], stats

    in_memory, stats = read(32 * 1024 * 1024)
    spilled, spilled_stats = read(4096)  # a few events per run
    assert stats.runs == 0 and spilled_stats.runs >= 10
    assert spilled == in_memory and len(spilled) == len(posted.events)
