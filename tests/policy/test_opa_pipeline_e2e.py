"""``engine: opa`` end to end on a real broker: Herald loads its route policies and templates into
an OPA server at start and routes and renders through it, with the embedded engine's output."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions import parse_config
from app.devtools.opa_local import OpaServer
from app.routing.policy.opa import OpaEngine
from app.routing.router import EventMeta, Router
from tests.harness import FIXTURES, Herald, Sink


def opa_config(sink: Sink) -> dict[str, Any]:
    return {
        "routes": [
            {"name": "r-aio", "input": 'contains(input.image, "all-in-one")', "actions": ["to-aio"],
             "template": "slack"},
            {"name": "r-nginx", "input": 'contains(input.image, "nginx")', "actions": ["to-never"],
             "template": "raw-json"},
        ],
        "templates": [
            {"name": "slack", "rego-package": "postee.vuls.slack"},
            {"name": "raw-json", "rego-package": "postee.rawmessage.json"},
        ],
        "actions": [
            {"name": "to-aio", "type": "webhook", "enable": True, "url": sink.url + "/aio", "timeout": "5s"},
            {"name": "to-never", "type": "webhook", "enable": True, "url": sink.url + "/never", "timeout": "5s"},
        ],
    }


@pytest.fixture(scope="module")
def own_opa(opa_server: OpaServer) -> Iterator[OpaServer]:
    # a server of its own: Herald leaves its modules in OPA (as in production), and the shared
    # test server must stay empty between tests
    with OpaServer(opa_server.binary) as server:
        yield server


def test_events_are_routed_and_rendered_through_opa(
    kafka: Any, own_opa: OpaServer, tmp_path: Path
) -> None:
    event = (FIXTURES / "postee" / "aqua-input.json").read_bytes()
    with Sink() as sink:
        sink.expect("/aio", method="POST", content_type="application/json", json=True)
        sink.expect("/never", method="POST")
        cfg = opa_config(sink)
        env = {"HERALD_ENGINE": "opa", "HERALD_OPA_URL": own_opa.url}
        with Herald(kafka, cfg, tmp_path, env=env) as herald:
            status, body = herald.post(event)
            assert status == 200
            decision = herald.wait_decision(body["event_id"])
            herald.wait_deliveries(body["event_id"], "to-aio")
            got = sink.wait_for("/aio", 1)
            assert herald.read_topic("action.to-never") == []

        # the same rendering as the embedded engine gives
        embedded = Router(parse_config(cfg)).route(event, EventMeta("x"))
        assert got[0].body.decode() == embedded.rendered["r-aio"].description
        assert decision["routes"]["r-aio"]["matched"] is True
        assert decision["actions"] == [{"route": "r-aio", "action": "to-aio"}]
        assert decision["routes"]["r-nginx"] == {
            "matched": False, "reason": "input rule did not allow", "template": "raw-json"}
        assert sink.count("/never") == 0

    # the routes and templates really were loaded into OPA
    probe = OpaEngine(own_opa.url)
    try:
        ids = probe.server_policy_ids()
    finally:
        probe.close()
    assert any(i.startswith("herald/herald.routes.r0/") for i in ids)
    assert any(i.startswith("herald/postee.vuls.slack/") for i in ids)
