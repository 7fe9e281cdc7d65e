"""opsgenie action against a local Alert API peer that validates like OpsGenie and dedups by alias."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.support import assert_golden, build_action, make_message, request_as_json, serve

from actions.opsgenie import OpsGenieAction, alerts_url
from app.errors import ConfigError, PermanentActionError, RetryableActionError

KEY = "eb243592-faa2-4ba2-a551q-1afdf565c889"
RESPONDER_TYPES = {"user", "team", "schedule", "escalation"}


def _answer(status: int, **body: Any) -> web.Response:
    return web.json_response({**body, "took": 0.004, "requestId": str(uuid.uuid4())}, status=status)


def alert_errors(body: Any) -> dict[str, str]:
    if not isinstance(body, dict):
        return {"body": "must be a JSON object"}
    errors = {}
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        errors["message"] = "Message can not be empty."
    elif len(message) > 130:
        errors["message"] = "Message can not be longer than 130 characters."
    if "priority" in body and body["priority"] not in ("P1", "P2", "P3", "P4", "P5"):
        errors["priority"] = "Priority should be one of [P1, P2, P3, P4, P5]"
    if len(str(body.get("alias", ""))) > 512:
        errors["alias"] = "Alias can not be longer than 512 characters."
    if len(str(body.get("description", ""))) > 15000:
        errors["description"] = "Description can not be longer than 15000 characters."
    tags = body.get("tags", [])
    if not isinstance(tags, list) or len(tags) > 20 or any(not isinstance(t, str) or len(t) > 50 for t in tags):
        errors["tags"] = "Tags must be a list of at most 20 strings of 50 characters."
    for key in ("responders", "visibleTo"):
        for r in body.get(key, []):
            if not isinstance(r, dict) or r.get("type") not in RESPONDER_TYPES or not (
                r.get("username") or r.get("name") or r.get("id")
            ):
                errors[key] = "Responder type and one of id, name or username are required."
    return errors


class FakeOpsGenie:
    def __init__(self) -> None:
        self.alerts: dict[str, dict[str, Any]] = {}  # alias -> alert, with a count like OpsGenie's
        self.throttle = False

    async def create(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"GenieKey {KEY}":
            return _answer(401, message="Could not authenticate")
        if self.throttle:
            return web.json_response({"message": "You are making too many requests! To avoid errors, we "
                                      "recommend you limit requests.", "took": 0.0}, status=429,
                                     headers={"Retry-After": "3"})
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _answer(400, message="Could not parse request body")
        errors = alert_errors(body)
        if errors:
            return _answer(422, message="Request body is not processable. Please check the errors.", errors=errors)
        alias = body.get("alias") or str(uuid.uuid4())
        if alias in self.alerts:
            self.alerts[alias]["count"] += 1
        else:
            self.alerts[alias] = {**body, "count": 1}
        return _answer(202, result="Request will be processed")


@pytest_asyncio.fixture
async def opsgenie() -> AsyncIterator[tuple[FakeOpsGenie, str]]:
    fake = FakeOpsGenie()
    app = web.Application()
    app.router.add_post("/v2/alerts", fake.create)
    async with serve(app) as base:
        yield fake, base


def og_action(url: str = "", **cfg: Any) -> OpsGenieAction:
    data = {"name": "og", "type": "opsgenie", "enable": True, "token": KEY, **cfg}
    if url:
        data["url"] = url
    action = build_action(data)
    assert isinstance(action, OpsGenieAction)
    return action


VULS_OPSGENIE = json.dumps({"description": "ubuntu:22.04 vulnerability scan report", "alias": "ubuntu:22.04"})


def test_golden_payload() -> None:
    action = og_action(user="herald", assignee=["alice@corp.test", "team:SecOps"], recipients=["bob@corp.test"],
                       tags=["security", "aqua"], priority="P2", entity="registry/ubuntu")
    request = action.build_payload(make_message(title="ubuntu:22.04", description=VULS_OPSGENIE))
    assert_golden("opsgenie", request_as_json(request))


@pytest.mark.asyncio
async def test_description_object_fields_are_used(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    desc = json.dumps({"description": "report", "alias": "img-1", "entity": "ubuntu", "priority": "p1",
                       "tags": ["cve", "critical"], "details": {"critical": 2, "image": "ubuntu"}})
    await og_action(base, tags="security, aqua", user="herald").deliver(make_message(title="ubuntu", description=desc))
    alert = fake.alerts["img-1"]
    assert alert["message"] == "ubuntu"
    assert alert["description"] == "report"
    assert alert["entity"] == "ubuntu"
    assert alert["priority"] == "P1"
    assert alert["tags"] == ["security", "aqua", "cve", "critical"]
    assert alert["details"] == {"critical": "2", "image": "ubuntu"}
    assert alert["user"] == "herald"


@pytest.mark.asyncio
async def test_description_tags_as_comma_string(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    desc = json.dumps({"description": "d", "alias": "a1", "tags": "x, y,,z"})
    await og_action(base, tags=["x"]).deliver(make_message(title="t", description=desc))
    assert fake.alerts["a1"]["tags"] == ["x", "y", "z"]


@pytest.mark.asyncio
async def test_text_description_and_native_dedup_on_redelivery(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    action = og_action(base)
    message = make_message(title="Falco: shell in container", description="<p>shell spawned</p>")
    await action.deliver(message)
    await action.deliver(message)  # a redelivery after, say, a worker crash
    assert list(fake.alerts) == [message.idempotency_key]
    alert = fake.alerts[message.idempotency_key]
    assert alert["count"] == 2
    assert alert["description"] == "<p>shell spawned</p>"
    assert alert["priority"] == "P3"


@pytest.mark.asyncio
async def test_responders_and_visible_to(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    action = og_action(base, assignee="alice@corp.test, team:SecOps, schedule:Nights", recipients=["escalation:L2"])
    await action.deliver(make_message(title="t", description='{"alias": "r1"}'))
    alert = fake.alerts["r1"]
    assert alert["responders"] == [{"type": "user", "username": "alice@corp.test"},
                                   {"type": "team", "name": "SecOps"}, {"type": "schedule", "name": "Nights"}]
    assert alert["visibleTo"] == [{"type": "escalation", "name": "L2"}]


@pytest.mark.asyncio
async def test_long_values_are_cut_to_opsgenie_limits(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    desc = json.dumps({"description": "d" * 20000, "alias": "long", "tags": [f"t{i}" + "x" * 60 for i in range(30)]})
    await og_action(base).deliver(make_message(title="m" * 200, description=desc))
    alert = fake.alerts["long"]
    assert len(alert["message"]) == 130 and len(alert["description"]) == 15000
    assert len(alert["tags"]) == 20 and all(len(t) == 50 for t in alert["tags"])


def test_priority_validation() -> None:
    with pytest.raises(ConfigError, match=r"actions\[0\]\.priority: must be one of P1, P2, P3, P4, P5, got 'P9'"):
        og_action(priority="P9")
    with pytest.raises(PermanentActionError, match="priority in the description must be one of .* got 'urgent'"):
        og_action().build_payload(make_message(title="t", description='{"priority": "urgent"}'))


def test_api_host_from_region_or_url() -> None:
    assert alerts_url(og_action().config) == "https://api.opsgenie.com/v2/alerts"
    assert alerts_url(og_action(**{"api-region": "EU"}).config) == "https://api.eu.opsgenie.com/v2/alerts"
    assert alerts_url(og_action("http://proxy:8080/").config) == "http://proxy:8080/v2/alerts"
    with pytest.raises(ConfigError, match=r"api-region: must be us or eu"):
        og_action(**{"api-region": "apac"})


def test_empty_title_is_permanent() -> None:
    with pytest.raises(PermanentActionError, match="title"):
        og_action().build_payload(make_message(title=" ", description="x"))


@pytest.mark.asyncio
async def test_wrong_key_is_permanent_and_hidden(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    _, base = opsgenie
    action = build_action({"name": "og", "type": "opsgenie", "token": "bad-genie-key-123", "url": base})
    with pytest.raises(PermanentActionError, match="Could not authenticate") as info:
        await action.deliver(make_message(title="t", description="x"))
    assert info.value.status == 401 and "bad-genie-key-123" not in str(info.value)


@pytest.mark.asyncio
async def test_throttled_is_retryable_with_retry_after(opsgenie: tuple[FakeOpsGenie, str]) -> None:
    fake, base = opsgenie
    fake.throttle = True
    with pytest.raises(RetryableActionError) as info:
        await og_action(base).deliver(make_message(title="t", description="x"))
    assert info.value.status == 429 and info.value.retry_after == 3
