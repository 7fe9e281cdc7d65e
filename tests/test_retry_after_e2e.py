"""Issue 4 acceptance through Kafka: 429 with Retry-After is honoured, 400 ends as one dead letter naming the peer's error."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.harness import FIXTURES, Herald, Sink


def test_retry_after_is_honoured_and_a_400_is_dead_lettered_with_the_peer_error(kafka: Any, tmp_path: Path) -> None:
    sink = Sink()
    for path in ("/slack-429", "/slack-400"):
        sink.expect(path, method="POST", content_type="application/json", json=True)
    sink.script("/slack-429", [(429, {"Retry-After": "1"})], then=200)
    sink.script("/slack-400", [], then=400)
    fast = {"retry-initial-backoff": "0.01s", "retry-max-backoff": "0.05s"}
    cfg = {
        "routes": [{"name": "scans", "actions": ["limited", "broken"], "template": "vuls-slack"}],
        "templates": [{"name": "vuls-slack", "rego-package": "postee.vuls.slack"}],
        "actions": [
            {"name": "limited", "type": "slack", "enable": True, "url": sink.url + "/slack-429", **fast},
            {"name": "broken", "type": "slack", "enable": True, "url": sink.url + "/slack-400", **fast},
        ],
    }
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        status, body = herald.post((FIXTURES / "postee" / "aqua-input.json").read_bytes())
        assert status == 200
        herald.wait_deliveries(body["event_id"], "limited")  # after the 429, then the 200
        got = sink.wait_for("/slack-429", 2)
        dead = herald.read_topic("dlq.broken", min_count=1)
        assert len(got) == 2
        assert got[1].at - got[0].at >= 1.0  # waited for Retry-After, not the 10 ms backoff
        assert got[0].json() == got[1].json() and got[1].json()["blocks"][0]["type"] == "section"
        attempts = herald.wait_deliveries(body["event_id"], "limited", count=2, outcome=None)
        assert [d["outcome"] for d in attempts] == ["failed", "delivered"] and attempts[0]["status"] == 429
        assert len(dead) == 1 and dead[0]["status"] == 400 and dead[0]["attempts"] == 1
        assert "sink error 400" in dead[0]["error"]  # the peer's own error text
        assert sink.count("/slack-400") == 1
