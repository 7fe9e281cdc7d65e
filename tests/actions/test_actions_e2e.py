"""End to end on a real broker: an Aqua scan posted to the bridge reaches each action's peer
(email, slack, teams, splunk, opsgenie, pagerduty) through router, action topics and worker."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web
from tests.actions.test_email import Smtp, _start
from tests.actions.test_opsgenie import KEY as OPSGENIE_KEY
from tests.actions.test_opsgenie import FakeOpsGenie
from tests.actions.test_pagerduty import ROUTING_KEY, FakePagerDuty
from tests.actions.test_slack import HOOK_PATH, FakeSlack
from tests.actions.test_splunk import TOKEN as HEC_TOKEN
from tests.actions.test_splunk import FakeHec
from tests.actions.test_teams import SIG, WORKFLOW_PATH, FakeTeams

from tests.harness import FIXTURES, Herald, free_port, wait_until

AQUA = json.loads((FIXTURES / "postee" / "aqua-input.json").read_text())
TITLE = f"{AQUA['image']} vulnerability scan report"


class Peers:
    """Every fake API on one aiohttp server (distinct paths, as the real ones are distinct hosts),
    run in a thread so the Herald worker subprocess can reach it."""

    def __init__(self) -> None:
        self.slack, self.teams, self.hec = FakeSlack(), FakeTeams(), FakeHec()
        self.opsgenie, self.pagerduty = FakeOpsGenie(), FakePagerDuty()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post(HOOK_PATH, self.slack.handle)
        app.router.add_post(WORKFLOW_PATH, self.teams.workflow_hook)
        app.router.add_post("/services/collector", self.hec.collector)
        app.router.add_post("/v2/alerts", self.opsgenie.create)
        app.router.add_post("/v2/enqueue", self.pagerduty.enqueue)
        return app

    def __enter__(self) -> Self:
        started = threading.Event()

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.runner = web.AppRunner(self.app(), access_log=None)
            self.loop.run_until_complete(self.runner.setup())
            self.loop.run_until_complete(web.TCPSite(self.runner, "127.0.0.1", self.port).start())
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(10), "peers did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def e2e_config(peers: Peers, smtp_port: int) -> dict[str, Any]:
    fast = {"enable": True, "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}
    aqua = f'input.image == "{AQUA["image"]}"'
    return {
        "routes": [
            {"name": "r-slack", "input": aqua, "actions": ["slack"], "template": "vuls-slack"},
            {"name": "r-html", "input": aqua, "actions": ["teams", "email"], "template": "vuls-html"},
            {"name": "r-opsgenie", "input": aqua, "actions": ["opsgenie"], "template": "vuls-opsgenie"},
            {"name": "r-machine", "input": aqua, "actions": ["splunk", "pagerduty"], "template": "raw-json"},
        ],
        "templates": [
            {"name": "vuls-slack", "rego-package": "postee.vuls.slack"},
            {"name": "vuls-html", "rego-package": "postee.vuls.html"},
            {"name": "vuls-opsgenie", "rego-package": "postee.vuls.opsgenie"},
            {"name": "raw-json", "rego-package": "postee.rawmessage.json"},
        ],
        "actions": [
            {"name": "slack", "type": "slack", "url": peers.url + HOOK_PATH, **fast},
            {"name": "teams", "type": "teams", "url": f"{peers.url}{WORKFLOW_PATH}?sig={SIG}", **fast},
            {"name": "email", "type": "email", "host": "127.0.0.1", "port": smtp_port,
             "sender": "herald@corp.test", "recipients": ["sec@corp.test"], **fast},
            {"name": "splunk", "type": "splunk", "url": peers.url, "token": HEC_TOKEN, "size-limit": 100000, **fast},
            {"name": "opsgenie", "type": "opsgenie", "url": peers.url, "token": OPSGENIE_KEY, "tags": ["aqua"],
             **fast},
            {"name": "pagerduty", "type": "pagerduty", "url": peers.url, "pagerduty-routing-key": ROUTING_KEY,
             **fast},
        ],
    }


@pytest.fixture(scope="module")
def delivered(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peers, Smtp, str]]:
    controller, smtp = _start()
    try:
        with Peers() as peers:
            workdir: Path = tmp_path_factory.mktemp("actions-e2e")
            with Herald(kafka, e2e_config(peers, smtp.port), workdir) as herald:
                status, body = herald.post(json.dumps(AQUA).encode())
                assert status == 200, body
                yield peers, smtp, body["event_id"]
    finally:
        controller.stop()


def arrived(items: Any, what: str) -> Any:
    return wait_until(lambda: items() or None, 90, what)


def test_slack_gets_the_vuls_slack_blocks(delivered: tuple[Peers, Smtp, str]) -> None:
    peers, _, _ = delivered
    [body] = arrived(lambda: peers.slack.received, "the Slack webhook call")
    assert body["blocks"][0] == {"type": "section", "text": {"type": "mrkdwn", "text": f"*{TITLE}*"}}
    assert any("Image name: " + AQUA["image"] in json.dumps(b) for b in body["blocks"][1:])


def test_teams_gets_an_adaptive_card(delivered: tuple[Peers, Smtp, str]) -> None:
    peers, _, _ = delivered
    [body] = arrived(lambda: peers.teams.workflow, "the Teams Workflows call")
    title, text = body["attachments"][0]["content"]["body"]
    assert title["text"] == TITLE
    assert "Image name: " + AQUA["image"] in text["text"] and "<p>" not in text["text"]


def test_email_gets_a_mime_message(delivered: tuple[Peers, Smtp, str]) -> None:
    _, smtp, _ = delivered
    [mail] = arrived(lambda: smtp.handler.received, "the SMTP delivery")
    assert mail.rcpt_tos == ["sec@corp.test"]
    message = mail.parsed()
    assert message["Subject"] == TITLE
    html = message.get_body(preferencelist=("html",))
    assert html is not None and "Image name: " + AQUA["image"] in html.get_content()


def test_splunk_gets_the_scan_as_an_event(delivered: tuple[Peers, Smtp, str]) -> None:
    peers, _, _ = delivered
    [body] = arrived(lambda: peers.hec.events, "the HEC event")
    assert body["sourcetype"] == "_json"
    assert body["event"]["image"] == AQUA["image"]
    assert body["event"]["resources"] == AQUA["resources"]


def test_opsgenie_gets_an_alert_with_the_template_alias(delivered: tuple[Peers, Smtp, str]) -> None:
    peers, _, _ = delivered
    alerts = arrived(lambda: peers.opsgenie.alerts, "the OpsGenie alert")
    alert = alerts[AQUA["image"]]
    assert alert["message"] == AQUA["image"]
    assert alert["description"] == TITLE
    assert alert["tags"] == ["aqua"] and alert["priority"] == "P3"


def test_pagerduty_gets_one_incident_per_event_and_route(delivered: tuple[Peers, Smtp, str]) -> None:
    peers, _, event_id = delivered
    incidents = arrived(lambda: peers.pagerduty.incidents, "the PagerDuty event")
    incident = incidents[f"herald:{event_id}:r-machine"]
    assert incident["payload"]["summary"] == "-"  # the raw-json template's title
    assert incident["payload"]["severity"] == "critical"  # the scan has a critical vulnerability
    assert incident["payload"]["custom_details"]["image"] == AQUA["image"]
