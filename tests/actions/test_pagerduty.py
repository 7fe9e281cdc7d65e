"""pagerduty action against a local Events API v2 peer that validates and dedups like PagerDuty."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.support import FIXTURES, assert_golden, build_action, make_message, request_as_json, serve

from actions.pagerduty import PagerDutyAction
from app.errors import ConfigError, PermanentActionError, RetryableActionError
from app.messages import ActionMessage

ROUTING_KEY = "R0UT1NGKEY0123456789abcdef012345"  # 32 characters, like a real integration key


def invalid(*errors: str) -> web.Response:
    return web.json_response({"status": "invalid event", "message": "Event object is invalid",
                              "errors": list(errors)}, status=400)


def event_errors(body: dict[str, Any]) -> list[str]:
    errors = []
    if body.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' is invalid (must be one of trigger, acknowledge or resolve)")
    if len(str(body.get("dedup_key", ""))) > 255:
        errors.append("'dedup_key' is too long (maximum is 255 characters)")
    payload = body.get("payload")
    if not isinstance(payload, dict):
        return [*errors, "'payload' is missing or blank"]
    summary = payload.get("summary")
    if not isinstance(summary, str) or not summary or len(summary) > 1024:
        errors.append("'payload.summary' is missing, blank or longer than 1024 characters")
    if not isinstance(payload.get("source"), str) or not payload["source"]:
        errors.append("'payload.source' is missing or blank")
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        errors.append("'payload.severity' is invalid (must be one of critical, error, warning or info)")
    if "timestamp" in payload:
        try:
            datetime.fromisoformat(str(payload["timestamp"]))
        except ValueError:
            errors.append("'payload.timestamp' is not a valid ISO 8601 timestamp")
    if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
        errors.append("'payload.custom_details' must be an object")
    return errors


class FakePagerDuty:
    def __init__(self) -> None:
        self.incidents: dict[str, dict[str, Any]] = {}  # dedup_key -> last event, with a count
        self.throttle = False

    async def enqueue(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json":
            return invalid("Content-Type must be application/json")
        try:
            body = json.loads(await request.read())
        except ValueError:
            return invalid("Request body is not valid JSON")
        if not isinstance(body, dict):
            return invalid("Event must be a JSON object")
        key = body.get("routing_key")
        if not isinstance(key, str) or len(key) != 32:
            return invalid("Length of 'routing_key' is incorrect (should be 32 characters)")
        if key != ROUTING_KEY:
            return invalid("'routing_key' is invalid")
        if self.throttle:
            return web.json_response({"status": "throttle event", "message": "Requests for this service are "
                                      "arriving too quickly. Please retry later."}, status=429)
        errors = event_errors(body)
        if errors:
            return invalid(*errors)
        dedup = body.get("dedup_key") or f"generated-{len(self.incidents)}"
        count = self.incidents.get(dedup, {}).get("count", 0) + 1
        self.incidents[dedup] = {**body, "count": count}
        return web.json_response({"status": "success", "message": "Event processed", "dedup_key": dedup},
                                 status=202)


@pytest_asyncio.fixture
async def pagerduty() -> AsyncIterator[tuple[FakePagerDuty, str]]:
    fake = FakePagerDuty()
    app = web.Application()
    app.router.add_post("/v2/enqueue", fake.enqueue)
    async with serve(app) as base:
        yield fake, base


def pd_action(url: str = "", name: str = "pd", **cfg: Any) -> PagerDutyAction:
    data = {"name": name, "type": "pagerduty", "enable": True, "pagerduty-routing-key": ROUTING_KEY, **cfg}
    if url:
        data["url"] = url
    action = build_action(data)
    assert isinstance(action, PagerDutyAction)
    return action


def fixture_event(path: str) -> dict[str, Any]:
    result = json.loads((FIXTURES / path).read_text())
    assert isinstance(result, dict)
    return result


def test_golden_payload() -> None:
    event = fixture_event("postee/aqua-input.json")
    desc = json.dumps({"image": event["image"], "critical": 1, "high": 1})
    message = make_message(title=f"{event['image']} vulnerability scan", description=desc, event=event,
                           url="https://aqua.example/#/images/Docker%20Hub/ubuntu")
    request = pd_action(**{"pagerduty-auth-token": "u+unusedRestToken"}).build_payload(message)
    assert_golden("pagerduty", request_as_json(request))


@pytest.mark.asyncio
async def test_trigger_is_accepted(pagerduty: tuple[FakePagerDuty, str]) -> None:
    fake, base = pagerduty
    await pd_action(base + "/").deliver(make_message(title="Falco: shell", description="<p>shell</p>"))
    [incident] = fake.incidents.values()
    assert incident["event_action"] == "trigger"
    assert incident["payload"]["summary"] == "Falco: shell"
    assert incident["payload"]["source"] == "herald"
    assert incident["payload"]["timestamp"] == "2026-01-01T00:00:00.000Z"
    assert incident["payload"]["custom_details"] == {"description": "<p>shell</p>"}


def with_action(message: ActionMessage, action: str, route: str | None = None) -> ActionMessage:
    message.action = action
    if route is not None:
        message.route = route
    return message


@pytest.mark.asyncio
async def test_dedup_key_is_per_event_and_route_not_per_action(pagerduty: tuple[FakePagerDuty, str]) -> None:
    fake, base = pagerduty
    first, second = pd_action(base, name="pd-team-a"), pd_action(base, name="pd-team-b")
    await first.deliver(with_action(make_message(description="x"), "pd-team-a"))
    await first.deliver(with_action(make_message(description="x"), "pd-team-a"))  # redelivery
    await second.deliver(with_action(make_message(description="x"), "pd-team-b"))
    assert [i["count"] for i in fake.incidents.values()] == [3]
    await first.deliver(with_action(make_message(description="x"), "pd-team-a", route="route-b"))
    assert len(fake.incidents) == 2


@pytest.mark.parametrize(("content_severity", "fixture", "fixed", "expected"), [
    ("", "postee/aqua-input.json", "", "critical"),
    ("", "postee/trivy-input.json", "", "critical"),
    ("", "postee/trivy-operator-input.json", "", "critical"),
    ("", "tracee/finding-single.json", "", "error"),
    ("", "falco/event-single.json", "", "critical"),
    ("1", None, "", "critical"),
    ("2", "postee/aqua-input.json", "", "error"),
    ("3", None, "", "warning"),
    ("5", None, "", "info"),
    ("High", None, "", "error"),
    ("", None, "", "critical"),
    ("1", "postee/aqua-input.json", "warning", "warning"),
])
def test_severity(content_severity: str, fixture: str | None, fixed: str, expected: str) -> None:
    event = fixture_event(fixture) if fixture else None
    action = pd_action(severity=fixed)
    message = make_message(description="x", event=event, severity=content_severity)
    assert action.event(message)["payload"]["severity"] == expected


@pytest.mark.parametrize(("event", "expected"), [
    ({"vulnerability_summary": {"critical": 0, "high": 0, "medium": 2, "low": 1}}, "warning"),
    ({"vulnerability_summary": {"critical": 0, "high": 0, "medium": 0}}, "info"),
    ({"report": {"summary": {"criticalCount": 0, "highCount": 3}}}, "error"),
    ({"Results": [{"Vulnerabilities": [{"Severity": "LOW"}, {"Severity": "MEDIUM"}]}]}, "warning"),
    ({"Results": []}, "info"),
    ({"priority": "Notice", "rule": "x"}, "info"),
    ({"SigMetadata": {"Properties": {"Severity": 4}}}, "critical"),
    ({"something": "else"}, "critical"),
])
def test_severity_from_event_shapes(event: dict[str, Any], expected: str) -> None:
    assert pd_action().event(make_message(description="x", event=event))["payload"]["severity"] == expected


def test_custom_details_from_json_object_and_links() -> None:
    doc = pd_action(source="registry-scanner").event(make_message(
        title="t" * 2000, description='{"image": "ubuntu", "critical": 2}',
        url="https://aqua/#/images/a\nnot a link\nhttps://aqua/#/images/b"))
    assert doc["payload"]["custom_details"] == {"image": "ubuntu", "critical": 2}
    assert doc["payload"]["source"] == "registry-scanner"
    assert len(doc["payload"]["summary"]) == 1024
    assert doc["links"] == [{"href": "https://aqua/#/images/a"}, {"href": "https://aqua/#/images/b"}]


@pytest.mark.asyncio
async def test_invalid_routing_key_is_permanent_and_hidden(pagerduty: tuple[FakePagerDuty, str]) -> None:
    _, base = pagerduty
    action = build_action({"name": "pd", "type": "pagerduty", "url": base,
                           "pagerduty-routing-key": "WRONGKEY0123456789abcdef01234567"})
    with pytest.raises(PermanentActionError, match="routing_key' is invalid") as info:
        await action.deliver(make_message(description="x"))
    assert info.value.status == 400 and "WRONGKEY0123456789abcdef01234567" not in str(info.value)


@pytest.mark.asyncio
async def test_throttled_is_retryable(pagerduty: tuple[FakePagerDuty, str]) -> None:
    fake, base = pagerduty
    fake.throttle = True
    with pytest.raises(RetryableActionError) as info:
        await pd_action(base).deliver(make_message(description="x"))
    assert info.value.status == 429


def test_config_rules() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.pagerduty-routing-key: is required \(give "
                                          r"pagerduty-routing-key or pagerduty-routing-key-file\)"):
        build_action({"name": "pd", "type": "pagerduty", "pagerduty-routing-key": ""})
    with pytest.raises(ConfigError, match=r"actions\[0\]\.severity: must be one of critical"):
        pd_action(severity="high")
    assert pd_action().config.url == "https://events.pagerduty.com"
