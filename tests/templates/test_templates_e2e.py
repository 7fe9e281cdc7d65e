"""Built-in templates and built-in filters through the real pipeline (bridge ->
Kafka -> router -> action topic -> webhook action -> loopback sink): what arrives is exactly the
pinned golden rendering, and the filters route the Aqua scan and the Tracee finding apart."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import FIXTURES, Herald, Sink
from tests.templates.goldenfile import GOLDENS, load


def config(sink: Sink) -> dict[str, Any]:
    def webhook(name: str) -> dict[str, Any]:
        return {"name": name, "type": "webhook", "enable": True, "url": f"{sink.url}/{name}", "timeout": "5s"}

    return {
        "aqua-server": "https://aqua.example.com",  # injected as https://aqua.example.com/#/images/
        "routes": [
            {"name": "scans", "input-files": ["Policy-Min-Vulnerability.rego", "Allow-Image-Name.rego"],
             "actions": ["html-mail"], "template": "vuls-html"},
            {"name": "tracee", "input-files": ["Privilege Escalation", "Tracee Default Set"],
             "actions": ["tracee-chat"], "template": "tracee-slack"},
        ],
        "templates": [
            {"name": "vuls-html", "rego-package": "postee.vuls.html"},
            {"name": "tracee-slack", "rego-package": "postee.tracee.slack"},
        ],
        "actions": [webhook("html-mail"), webhook("tracee-chat")],
    }


@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as s:
        s.expect("/html-mail", method="POST", content_type="application/json")  # webhook: HTML body as is
        s.expect("/tracee-chat", method="POST", content_type="application/json", json=True)
        yield s


@pytest.fixture(scope="module")
def herald(kafka: Any, sink: Sink, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    with Herald(kafka, config(sink), tmp_path_factory.mktemp("templates-e2e")) as h:
        yield h


def golden_description(name: str) -> str:
    return load((GOLDENS / f"{name}.golden").read_text())["description"]


def test_scan_and_finding_arrive_rendered_as_pinned(herald: Herald, sink: Sink) -> None:
    status, scan = herald.post((FIXTURES / "postee" / "aqua-input.json").read_bytes())
    assert status == 200
    status, finding = herald.post((FIXTURES / "tracee" / "finding-single.json").read_bytes())
    assert status == 200
    # each event matched only its own route: the router's decision on each ...
    for event_id, route, action in ((scan["event_id"], "scans", "html-mail"),
                                    (finding["event_id"], "tracee", "tracee-chat")):
        decision = herald.wait_decision(event_id)
        assert {name: r["matched"] for name, r in decision["routes"].items()} == {
            "scans": route == "scans", "tracee": route == "tracee"}
        assert decision["actions"] == [{"route": route, "action": action}]
        herald.wait_deliveries(event_id, action)  # ... and its one delivery, done
    html = sink.wait_for("/html-mail", 1)
    assert html[0].body.decode() == golden_description("postee.vuls.html__aqua-input")
    tracee = sink.wait_for("/tracee-chat", 1)
    assert tracee[0].body.decode() == golden_description("postee.tracee.slack__finding-single")
    # no event reached the other route's action
    assert (sink.count("/html-mail"), sink.count("/tracee-chat")) == (1, 1)
    assert sorted((d["event_id"], d["action"]) for d in herald.read_topic("deliveries")) == sorted(
        [(scan["event_id"], "html-mail"), (finding["event_id"], "tracee-chat")])
