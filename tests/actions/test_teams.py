"""teams action against a local peer that answers like an O365 connector and like Workflows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.support import assert_golden, build_action, make_message, request_as_json, serve

from actions.teams import TeamsAction, detect_format
from app.errors import ConfigError, PermanentActionError

SIG = "wfSigSecret0123456789"
CONNECTOR_PATH = "/webhookb2/3f0c@72f9/IncomingWebhook/abc123/def456"
WORKFLOW_PATH = "/workflows/8d1e/triggers/manual/paths/invoke"


class FakeTeams:
    """Connector endpoint: 200 ``1``; Workflows endpoint: checks ``sig`` and the card, 202."""

    def __init__(self) -> None:
        self.connector: list[dict[str, Any]] = []
        self.workflow: list[dict[str, Any]] = []

    async def _json(self, request: web.Request) -> Any:
        if request.method != "POST" or request.content_type != "application/json":
            return None
        try:
            return json.loads(await request.read())
        except ValueError:
            return None

    async def connector_hook(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("text"), str) or not body["text"]:
            return web.Response(status=400, text="Summary or Text is required.")
        self.connector.append(body)
        return web.Response(text="1")

    async def workflow_hook(self, request: web.Request) -> web.Response:
        if request.query.get("sig") != SIG:
            return web.json_response({"error": {"code": "DirectApiAuthorizationRequired",
                                                "message": "The request must be authenticated"}}, status=401)
        body = await self._json(request)
        problem = workflow_problem(body)
        if problem:
            return web.json_response({"error": {"code": "InvalidRequestContent", "message": problem}}, status=400)
        self.workflow.append(body)
        return web.Response(status=202)


def workflow_problem(body: Any) -> str | None:
    if not isinstance(body, dict) or body.get("type") != "message":
        return "type must be message"
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or len(attachments) != 1:
        return "one attachment expected"
    att = attachments[0]
    if att.get("contentType") != "application/vnd.microsoft.card.adaptive" or "contentUrl" not in att:
        return "attachment is not an adaptive card"
    card = att.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard" or not isinstance(card.get("version"), str):
        return "content is not an AdaptiveCard"
    if not isinstance(card.get("body"), list) or not all(isinstance(e, dict) and "type" in e for e in card["body"]):
        return "card body must be a list of elements"
    return None


@pytest_asyncio.fixture
async def teams() -> AsyncIterator[tuple[FakeTeams, str]]:
    fake = FakeTeams()
    app = web.Application()
    app.router.add_post(CONNECTOR_PATH, fake.connector_hook)
    app.router.add_post(WORKFLOW_PATH, fake.workflow_hook)
    app.router.add_post("/custom/hook", fake.workflow_hook)
    async with serve(app) as base:
        yield fake, base


def teams_action(url: str, **cfg: Any) -> TeamsAction:
    action = build_action({"name": "teams-main", "type": "teams", "enable": True, "url": url, **cfg})
    assert isinstance(action, TeamsAction)
    return action


@pytest.mark.parametrize(("url", "kind"), [
    ("https://contoso.webhook.office.com/webhookb2/a@b/IncomingWebhook/c/d", "connector"),
    ("https://outlook.office.com/webhook/a@b/IncomingWebhook/c/d", "connector"),
    ("https://prod-12.westus.logic.azure.com:443/workflows/ab12/triggers/manual/paths/invoke?sig=x", "workflow"),
    (("https://default1a2b.03.environment.api.powerplatform.com:443/powerautomate/automations/direct/"
      "workflows/ab12/triggers/manual/paths/invoke?sig=x"), "workflow"),
    ("https://teams-proxy.internal/hook", "connector"),
])
def test_detects_the_webhook_kind(url: str, kind: str) -> None:
    assert detect_format(url) == kind
    assert teams_action(url).format == kind


HTML = "<p>Image <b>ubuntu:22.04</b> has <a href='https://aqua/#/images/ubuntu'>2 critical</a> issues</p>" \
       "<table><tr><th>CVE</th><th>Severity</th></tr><tr><td>CVE-1</td><td>critical</td></tr></table>"


def test_golden_payloads() -> None:
    message = make_message(title='Image "ubuntu:22.04" <critical>', description=HTML)
    connector = teams_action("https://contoso.webhook.office.com" + CONNECTOR_PATH).build_payload(message)
    workflow = teams_action(f"https://prod-1.westus.logic.azure.com{WORKFLOW_PATH}?sig={SIG}").build_payload(message)
    assert_golden("teams", {"connector": request_as_json(connector), "workflow": request_as_json(workflow)})


@pytest.mark.asyncio
async def test_connector_message_is_valid_json_with_escaped_title(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    title = 'Image "ubuntu" <none>\nnext & line'
    await teams_action(base + CONNECTOR_PATH, **{"teams-format": "connector"}).deliver(
        make_message(title=title, description=HTML))
    [body] = fake.connector
    assert body == {"text": '<h2>Image "ubuntu" &lt;none&gt;\nnext &amp; line</h2>\n' + HTML}


@pytest.mark.asyncio
async def test_workflow_card_with_markdown_body_and_202(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    await teams_action(f"{base}{WORKFLOW_PATH}?api-version=2016-06-01&sig={SIG}").deliver(
        make_message(title="Scan", description=HTML))
    [body] = fake.workflow
    card = body["attachments"][0]["content"]
    assert card["version"] == "1.4"
    title, text = card["body"]
    assert title == {"type": "TextBlock", "text": "Scan", "weight": "Bolder", "size": "Medium", "wrap": True}
    assert text["text"] == (
        "Image **ubuntu:22.04** has [2 critical](https://aqua/#/images/ubuntu) issues\n\n"
        "CVE | Severity\nCVE-1 | critical"
    )


@pytest.mark.asyncio
async def test_format_override_for_any_url(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    await teams_action(f"{base}/custom/hook?sig={SIG}", **{"teams-format": "workflow"}).deliver(
        make_message(title="", description="plain text"))
    card = fake.workflow[0]["attachments"][0]["content"]
    assert [e["text"] for e in card["body"]] == ["Herald notification", "plain text"]


@pytest.mark.asyncio
async def test_adaptive_card_description_is_sent_as_the_card(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    card = {"type": "AdaptiveCard", "version": "1.5", "body": [{"type": "FactSet", "facts": [
        {"title": "Image", "value": "ubuntu"}]}]}
    await teams_action(f"{base}{WORKFLOW_PATH}?sig={SIG}").deliver(make_message(description=json.dumps(card)))
    assert fake.workflow[0]["attachments"][0]["content"] == card


@pytest.mark.asyncio
async def test_too_long_description_becomes_the_short_message(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    action = teams_action(base + CONNECTOR_PATH)
    event = {"postee": {"AquaServer": "https://aqua.example/#/images/"}}
    urls = "https://aqua.example/#/images/reg/ubuntu\nhttps://aqua.example/#/images/reg/alpine"
    await action.deliver(make_message(title="T", description="x" * 18001, event=event, url=urls))
    await action.deliver(make_message(title="T", description="x" * 18001))
    assert fake.connector[0]["text"] == (
        "<h2>T</h2>\n<p>This message is too long to display here. Please visit the link to read the content.</p>\n"
        "<p><a href='https://aqua.example/#/images/reg/ubuntu'>https://aqua.example/#/images/reg/ubuntu</a></p>\n"
        "<p><a href='https://aqua.example/#/images/reg/alpine'>https://aqua.example/#/images/reg/alpine</a></p>\n"
    )
    assert "Please configure Aqua server url" in fake.connector[1]["text"]
    assert len(fake.connector[1]["text"]) < 500


@pytest.mark.asyncio
async def test_exactly_the_limit_is_sent_whole(teams: tuple[FakeTeams, str]) -> None:
    fake, base = teams
    await teams_action(base + CONNECTOR_PATH).deliver(make_message(title="T", description="y" * 18000))
    assert fake.connector[0]["text"] == "<h2>T</h2>\n" + "y" * 18000


@pytest.mark.asyncio
async def test_rejected_workflow_is_permanent_and_hides_the_signature(teams: tuple[FakeTeams, str]) -> None:
    _, base = teams
    with pytest.raises(PermanentActionError, match="HTTP 401") as info:
        await teams_action(f"{base}{WORKFLOW_PATH}?sig=wrongSignature999").deliver(make_message(description="x"))
    assert "wrongSignature999" not in str(info.value)


def test_bad_format_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.teams-format: must be one of auto, connector, workflow"):
        teams_action("https://x.webhook.office.com/webhookb2/a", **{"teams-format": "card"})


@pytest.mark.asyncio
async def test_the_router_gives_actions_the_aqua_server_for_the_short_message(teams: tuple[FakeTeams, str]) -> None:
    # Postee's Teams output links its "too long" message to <aqua-server>/#/images/; the router
    # puts that value into the event of every action message, as it does for templates.
    from actions import parse_config
    from app.routing.router import EventMeta, Router

    fake, base = teams
    data = {
        "routes": [{"name": "r", "actions": ["t"], "template": "long"}],
        "templates": [{"name": "long", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "t", "type": "teams", "enable": True, "url": base + CONNECTOR_PATH}],
    }
    result = Router(parse_config({"aqua-server": "https://aqua.example", **data})).route(json.dumps({"image": "ubuntu", "pad": "x" * 19000}).encode(), EventMeta("e1"))
    [message] = result.messages
    assert message.event["postee"] == {"AquaServer": "https://aqua.example/#/images/"}
    await teams_action(base + CONNECTOR_PATH).deliver(message)
    assert "too long" in fake.connector[0]["text"] and "Please configure" not in fake.connector[0]["text"]
    # without aqua-server the event is passed on as it came
    [plain] = Router(parse_config(data)).route(b'{"image": "u"}', EventMeta("e2")).messages
    assert plain.event == {"image": "u"}
