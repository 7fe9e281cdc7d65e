"""splunk action against a local HTTP Event Collector that checks the token and JSON like HEC."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from tests.actions.support import (
    FIXTURES,
    assert_golden,
    build_action,
    make_message,
    request_as_json,
    self_signed_cert,
    serve,
    server_tls_context,
)

from actions.splunk import SplunkAction, collector_url
from app.errors import PermanentActionError, RetryableActionError

TOKEN = "9f2c1e4b-hec-token-7d3a"


class FakeHec:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.busy = False

    async def collector(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization")
        if auth is None:
            return web.json_response({"text": "Token is required", "code": 2}, status=401)
        scheme, _, token = auth.partition(" ")
        if scheme != "Splunk" or not token:
            return web.json_response({"text": "Invalid authorization", "code": 3}, status=401)
        if token != TOKEN:
            return web.json_response({"text": "Invalid token", "code": 4}, status=403)
        if self.busy:
            return web.json_response({"text": "Server is busy", "code": 9}, status=503)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return web.json_response({"text": "Invalid data format", "code": 6}, status=400)
        if not isinstance(body, dict) or "event" not in body:
            return web.json_response({"text": "Event field is required", "code": 12}, status=400)
        if body["event"] in ("", None):
            return web.json_response({"text": "Event field cannot be blank", "code": 13}, status=400)
        self.events.append(body)
        return web.json_response({"text": "Success", "code": 0})


def hec_app(fake: FakeHec) -> web.Application:
    app = web.Application()
    app.router.add_post("/services/collector", fake.collector)
    app.router.add_post("/services/collector/event", fake.collector)
    return app


@pytest_asyncio.fixture
async def hec() -> AsyncIterator[tuple[FakeHec, str]]:
    fake = FakeHec()
    async with serve(hec_app(fake)) as base:
        yield fake, base


def splunk_action(url: str, **cfg: Any) -> SplunkAction:
    action = build_action({"name": "splunk-main", "type": "splunk", "enable": True, "url": url, "token": TOKEN, **cfg})
    assert isinstance(action, SplunkAction)
    return action


@pytest.mark.parametrize(("base", "url"), [
    ("https://splunk:8088", "https://splunk:8088/services/collector"),
    ("https://splunk:8088/", "https://splunk:8088/services/collector"),
    ("https://splunk:8088//", "https://splunk:8088/services/collector"),
    ("https://splunk:8088/services/collector/", "https://splunk:8088/services/collector"),
    ("https://splunk:8088/services/collector/event", "https://splunk:8088/services/collector/event"),
])
def test_collector_url_has_exactly_one_slash(base: str, url: str) -> None:
    assert collector_url(base) == url


def test_golden_payload() -> None:
    desc = json.dumps({"image": "ubuntu:22.04", "registry": "Docker Hub",
                       "vulnerability_summary": {"critical": 1, "high": 2}})
    request = splunk_action("https://splunk.example:8088").build_payload(make_message(description=desc))
    assert_golden("splunk", request_as_json(request))


@pytest.mark.asyncio
async def test_sends_aqua_scan_as_json_event(hec: tuple[FakeHec, str]) -> None:
    fake, base = hec
    scan = json.loads((FIXTURES / "postee/aqua-input.json").read_text())
    await splunk_action(base + "/", **{"size-limit": 100000}).deliver(make_message(description=json.dumps(scan)))
    assert fake.events == [{"sourcetype": "_json", "event": scan}]


@pytest.mark.asyncio
async def test_any_json_document_is_kept_whole(hec: tuple[FakeHec, str]) -> None:
    fake, base = hec
    trivy = json.loads((FIXTURES / "postee/trivy-input.json").read_text())
    await splunk_action(base, **{"size-limit": 200000}).deliver(make_message(description=json.dumps(trivy)))
    assert fake.events[0]["event"] == trivy  # Postee kept only Aqua-scan fields


@pytest.mark.asyncio
async def test_text_is_sent_as_a_string_event(hec: tuple[FakeHec, str]) -> None:
    fake, base = hec
    await splunk_action(base).deliver(make_message(description="<p>not json</p>"))
    assert fake.events == [{"sourcetype": "_json", "event": "<p>not json</p>"}]


def aqua_event() -> dict[str, Any]:
    return {
        "image": "ubuntu:22.04",
        "resources": [{"resource": {"name": f"pkg{i}"}, "vulnerabilities": [{"name": "CVE"}]} for i in range(60)],
        "malware": [{"malware": f"trojan-{i}", "paths": ["/bin/x"]} for i in range(40)],
        "sensitive_data": [{"type": "private_key", "path": f"/k{i}"} for i in range(20)],
    }


def body_size(event: dict[str, Any]) -> int:
    return len(json.dumps({"sourcetype": "_json", "event": event}, separators=(",", ":")).encode())


@pytest.mark.asyncio
@pytest.mark.parametrize("dropped", [[], ["resources"], ["resources", "malware"],
                                     ["resources", "malware", "sensitive_data"]])
async def test_trims_aqua_scans_in_postee_order(hec: tuple[FakeHec, str], dropped: list[str]) -> None:
    fake, base = hec
    full = aqua_event()
    expected = {k: v for k, v in full.items() if k not in dropped}
    limit = body_size(expected)  # exactly fits once `dropped` are gone
    await splunk_action(base, **{"size-limit": limit}).deliver(make_message(description=json.dumps(full)))
    assert fake.events[0]["event"] == expected


def test_still_too_large_is_permanent() -> None:
    action = splunk_action("https://splunk:8088", **{"size-limit": 40})
    with pytest.raises(PermanentActionError, match=r"image 'ubuntu:22.04' is \d+ bytes after dropping "
                                                   r"resources, malware, sensitive_data, over size-limit 40"):
        action.build_payload(make_message(description=json.dumps(aqua_event())))
    with pytest.raises(PermanentActionError, match="over size-limit 40"):
        action.build_payload(make_message(description="x" * 100))


@pytest.mark.asyncio
async def test_wrong_token_is_permanent_and_hidden(hec: tuple[FakeHec, str]) -> None:
    _, base = hec
    action = build_action({"name": "s", "type": "splunk", "url": base, "token": "wrong-hec-token-000"})
    with pytest.raises(PermanentActionError, match="Invalid token") as info:
        await action.deliver(make_message(description="{}"))
    assert info.value.status == 403
    assert "wrong-hec-token-000" not in str(info.value)


@pytest.mark.asyncio
async def test_busy_server_is_retryable(hec: tuple[FakeHec, str]) -> None:
    fake, base = hec
    fake.busy = True
    with pytest.raises(RetryableActionError) as info:
        await splunk_action(base).deliver(make_message(description="{}"))
    assert info.value.status == 503


@pytest.mark.asyncio
async def test_tls_verify_means_verify(tmp_path: Path) -> None:
    fake = FakeHec()
    cert, key = self_signed_cert(tmp_path)
    async with serve(hec_app(fake), ssl_context=server_tls_context(cert, key)) as base:
        assert base.startswith("https://")
        with pytest.raises(RetryableActionError, match="TLS|certificate|SSL"):
            await splunk_action(base).deliver(make_message(description='{"a": 1}'))
        assert fake.events == []
        await splunk_action(base, **{"tls-verify": False}).deliver(make_message(description='{"a": 1}'))
    assert fake.events == [{"sourcetype": "_json", "event": {"a": 1}}]
