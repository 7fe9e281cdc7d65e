"""The example events the README and docs point at exist, and the example configs route them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from actions import load_config
from app.routing.router import EventMeta, Router
from tests.harness import ROOT

EVENTS = ROOT / "examples" / "events"


def test_every_example_event_the_docs_name_exists() -> None:
    named = set()
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        named |= set(re.findall(r"examples/events/[\w.-]+\.json", doc.read_text()))
    assert "examples/events/aqua-scan.json" in named
    assert sorted(p for p in named if not (ROOT / p).is_file()) == []


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.name)
def test_example_config_prints_every_example_event(path: Path) -> None:
    event = json.loads(path.read_text())
    assert isinstance(event, dict) and event
    result = Router(load_config(str(ROOT / "examples" / "cfg.yaml"))).route(path.read_bytes(), EventMeta("x"))
    assert [m.action for m in result.messages] == ["stdout"] and result.failures == []


def test_tracee_example_config_routes_the_example_finding_and_falco_event() -> None:
    router = Router(load_config(str(ROOT / "examples" / "tracee-cfg.yaml")))

    def matched(name: str) -> set[str]:
        result = router.route((EVENTS / name).read_bytes(), EventMeta("x"))
        return {route for route, v in result.verdicts.items() if v.matched}

    assert matched("tracee-finding.json") == {"tracee", "tracee-all"}
    critical = json.loads((EVENTS / "falco-event.json").read_text())["priority"] == "Critical"
    assert matched("falco-event.json") == ({"falco-critical"} if critical else set())
