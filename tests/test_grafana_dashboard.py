"""Issue 15: every query of the Grafana dashboard names a metric Herald exports (app.telemetry.metrics)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from app.telemetry import metrics

DASHBOARD = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "herald-dashboard.json"

# PromQL words that are not metric names: functions are recognised by the "(" after them
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_IDENT = re.compile(r"(?<![\w$.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(?![\w:])(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (strings, label matchers, ranges, groupings,
    functions, keywords and numbers left out)."""
    text = _STRING.sub('""', expr)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {m for m in _IDENT.findall(text) if m.lower() not in KEYWORDS and not re.fullmatch(r"\d\w*", m)}


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels of a collapsed row
    return out


def load() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def test_parser_finds_the_metric_names() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, action) (rate(herald_delivery_latency_seconds_bucket'
            '{job=~"$job", action!="x"}[$__rate_interval]))) / on (action) group_left '
            'sum without (instance) (herald_deliveries_total offset 5m) > bool 1e3')
    assert metric_names(expr) == {"herald_delivery_latency_seconds_bucket", "herald_deliveries_total"}
    assert metric_names('sum(rate(foo_total{a="b{c}"}[5m]))') == {"foo_total"}


def test_every_query_names_an_exported_metric() -> None:
    exported = metrics.exported_names()
    # the suffix rules: counters as _total, histograms as _bucket/_sum/_count; gauges bare
    assert {"herald_deliveries_total", "herald_delivery_latency_seconds_bucket",
            "herald_delivery_latency_seconds_count", "herald_consumer_lag_messages"} <= exported
    assert "herald_deliveries" not in {n for n in exported if n.endswith("_bucket")}
    queries = 0
    used: set[str] = set()
    for panel in panels(load()):
        if panel["type"] == "row":
            continue
        targets = panel.get("targets") or []
        assert targets, f"panel {panel['title']!r} has no query"
        for target in targets:
            names = metric_names(target["expr"])
            assert names, f"panel {panel['title']!r}: no metric in {target['expr']!r}"
            unknown = names - exported
            assert not unknown, f"panel {panel['title']!r}: {sorted(unknown)} not exported by Herald"
            used |= names
            queries += 1
    assert queries >= 20
    # every Herald metric family is on the dashboard
    families = {f.name for f in metrics.REGISTRY.collect() if f.name.startswith("herald_")}
    shown = {re.sub(r"_(total|bucket|sum|count)$", "", n) for n in used}
    assert families - shown == set()


@pytest.mark.parametrize("title, needs", [
    ("Intake rate", "herald_bridge_requests_total"),
    ("Delivery success per action", "herald_deliveries_total"),
    ("Dead letters", "herald_dead_letters_total"),
    ("Consumer lag by topic", "herald_consumer_lag_messages"),
    ("Delivery latency p99", "histogram_quantile(0.99"),
    ("Request errors", 'status=~\\"4..|5..\\"'),
])
def test_the_on_call_panels_are_there(title: str, needs: str) -> None:
    (panel,) = [p for p in panels(load()) if p["title"] == title]
    assert needs in json.dumps([t["expr"] for t in panel["targets"]])


def test_layout_and_datasource() -> None:
    dashboard = load()
    assert dashboard["uid"] == "herald-overview" and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in panels(dashboard):
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"panel {p['title']!r} overlaps another"
        cells |= mine
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}"
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "job"]
