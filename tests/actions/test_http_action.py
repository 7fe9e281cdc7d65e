"""http action against a real aiohttp server on 127.0.0.1."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from actions.http import HttpAction, HttpConfig
from app.config.model import validate_model
from app.errors import ConfigError, PermanentActionError, RetryableActionError
from tests.actions._msg import fixture, message


@dataclass
class Received:
    method: str
    path: str
    headers: Any
    body: bytes


@dataclass
class Peer:
    url: str
    requests: list[Received] = field(default_factory=list)
    status: int = 200
    retry_after: str | None = None


@pytest_asyncio.fixture
async def peer() -> AsyncIterator[Peer]:
    state = Peer(url="")

    async def handle(request: web.Request) -> web.Response:
        state.requests.append(
            Received(request.method, request.path_qs, request.headers.copy(), await request.read())
        )
        headers = {"Retry-After": state.retry_after} if state.retry_after else {}
        return web.Response(status=state.status, text="peer says no" if state.status >= 300 else "ok",
                            headers=headers)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


def config(**cfg: object) -> HttpConfig:
    data: dict[str, object] = {"name": "h", "type": "http", "url": "http://127.0.0.1:1/x", "method": "post"}
    data.update(cfg)
    obj, _ = validate_model(HttpConfig, data, "actions[3]")
    return obj


async def deliver(cfg: HttpConfig, description: str, event: dict[str, Any] | None = None) -> None:
    act = HttpAction(cfg)
    await act.start()
    try:
        await act.deliver(message(description, event))
    finally:
        await act.close()


# --- config ---------------------------------------------------------------------------------


def test_config_defaults_and_normalisation() -> None:
    cfg = config(headers={"X-One": "a", "X-Many": ["b", 2]})
    assert cfg.method == "POST"
    assert cfg.timeout == 5.0
    assert cfg.headers == {"X-One": ["a"], "X-Many": ["b", "2"]}
    assert config(timeout="30s").timeout == 30.0


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"url": "not a url"}, "actions[3].url"),
        ({"url": "http://host:99999/"}, "actions[3].url"),
        ({"url": "ftp://host/"}, "actions[3].url"),
        ({"method": "GE T"}, "actions[3].method"),
        ({"method": None}, "actions[3].method"),
        ({"timeout": "soon"}, "timeout"),
        ({"headers": {"Bad Name": ["x"]}}, "invalid header name 'Bad Name'"),
        ({"headers": {"X": ["a\r\nInjected: 1"]}}, "line break"),
        ({"headers": "X: y"}, "actions[3].headers"),
        ({"body-file": "/f", "body-content": "x"}, "'body-file' and 'body-content'"),
    ],
)
def test_config_errors(cfg: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        config(**cfg)
    assert needle in str(err.value)


def test_method_and_url_are_required() -> None:
    with pytest.raises(ConfigError, match=r"actions\[3\]\.url.*actions\[3\]\.method"):
        validate_model(HttpConfig, {"name": "h", "type": "http"}, "actions[3]")


def test_build_payload_resolves_placeholders_in_body() -> None:
    body = "argsNum: event.input.argsNum\nboth: event.input.a/event.input.b! event.input.a-event.input.b"
    cfg = config(**{"body-content": body})
    call = HttpAction(cfg).build_payload(message('{"argsNum": 2, "a": "x", "b": "y"}'))
    # "-" is a path character, so the second form is the one path "a-event.input.b"
    assert call.request.body == b"argsNum: 2\nboth: x/y! "
    assert ("Postee-Event", base64.b64encode(b'{"argsNum": 2, "a": "x", "b": "y"}').decode()) in (
        call.request.headers
    )


# --- wire -----------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_request_on_the_wire(peer: Peer) -> None:
    desc = json.dumps({"image": "library/nginx:1.16", "vulns": [{"id": "CVE-1"}]})
    cfg = config(
        url=f"{peer.url}/hook?x=1",
        method="put",
        headers={"X-Token": ["t1", "t2"], "Content-Type": "text/plain"},
        **{"body-content": "image=event.input.image first=event.input.vulns.0.id n=event.input.vulns.#"},
    )
    await deliver(cfg, desc)
    [req] = peer.requests
    assert (req.method, req.path) == ("PUT", "/hook?x=1")
    assert base64.b64decode(req.headers["Postee-Event"]).decode() == desc
    assert req.headers.getall("X-Token") == ["t1", "t2"]
    assert req.headers["Content-Type"] == "text/plain"
    assert req.headers["Idempotency-Key"] == "ev-1:r:a"
    assert req.body == b"image=library/nginx:1.16 first=CVE-1 n=1"


@pytest.mark.asyncio
async def test_non_json_description_keeps_postee_result(peer: Peer) -> None:
    await deliver(config(url=peer.url, **{"body-content": "msg: event.input\nk: event.input.key"}), "hello")
    assert peer.requests[0].body == b"msg: hello\nk: hello.key"


@pytest.mark.asyncio
async def test_event_raw_resolves_against_the_original_event(peer: Peer) -> None:
    event = fixture("trivy-operator-input.json")
    body = (
        "workload=event.raw.metadata.labels.trivy-operator\\.resource\\.name "
        "critical=event.raw.report.summary.criticalCount"
    )
    await deliver(config(url=peer.url, **{"body-content": body}), "not json", event)
    assert peer.requests[0].body == b"workload=nginx-6d4cf56db6 critical=2"


@pytest.mark.asyncio
async def test_body_file_read_at_send_time_without_placeholders(peer: Peer, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    act = HttpAction(config(url=peer.url, method="GET", **{"body-file": str(body)}))
    call = act.build_payload(message('{"a": 1}'))
    body.write_text("raw event.input.a")  # written after build_payload: read at send
    await act.start()
    try:
        await act.send(call)
    finally:
        await act.close()
    assert (peer.requests[0].method, peer.requests[0].body) == ("GET", b"raw event.input.a")


@pytest.mark.asyncio
async def test_missing_body_file_is_permanent(peer: Peer, tmp_path: Path) -> None:
    with pytest.raises(PermanentActionError, match="cannot read body-file"):
        await deliver(config(url=peer.url, **{"body-file": str(tmp_path / "nope")}), "x")
    assert peer.requests == []


@pytest.mark.asyncio
async def test_no_body_when_neither_is_set(peer: Peer) -> None:
    await deliver(config(url=peer.url), "x")
    assert peer.requests[0].body == b""


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_any_2xx_is_success(peer: Peer, status: int) -> None:
    peer.status = status
    await deliver(config(url=peer.url), "x")
    assert len(peer.requests) == 1


@pytest.mark.asyncio
async def test_4xx_is_permanent(peer: Peer) -> None:
    peer.status = 400
    with pytest.raises(PermanentActionError, match="HTTP 400: peer says no") as err:
        await deliver(config(url=peer.url), "x")
    assert err.value.status == 400


@pytest.mark.asyncio
async def test_5xx_and_429_are_retryable_with_retry_after(peer: Peer) -> None:
    peer.status, peer.retry_after = 503, "7"
    with pytest.raises(RetryableActionError) as err:
        await deliver(config(url=peer.url), "x")
    assert (err.value.status, err.value.retry_after) == (503, 7.0)
    peer.status = 429
    with pytest.raises(RetryableActionError):
        await deliver(config(url=peer.url), "x")


@pytest.mark.asyncio
async def test_connection_refused_is_retryable(peer: Peer) -> None:
    # a port that was just free: bind, read the port, close
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RetryableActionError, match="connection failed"):
        await deliver(config(url=f"http://127.0.0.1:{port}/"), "x")
    assert peer.requests == []


# -- JSON bodies: substituted values are JSON-escaped --------------------------------------------

EVIL = 'nginx","admin":true,"x":"'
JSON_BODY = '{"image": "event.input.image", "tag": "v-event.input.tag", "n": event.input.n}'


def _body(body_content: str, desc: dict[str, Any], **extra: Any) -> bytes | None:
    call = HttpAction(config(**{"body-content": body_content}, **extra)).build_payload(message(json.dumps(desc)))
    return call.request.body


def test_json_body_escapes_values_in_strings() -> None:
    raw = _body(JSON_BODY, {"image": EVIL, "tag": "1\n\\2", "n": 3})
    assert raw is not None
    doc = json.loads(raw)
    assert doc == {"image": EVIL, "tag": "v-1\n\\2", "n": 3}
    assert "admin" not in doc


def test_json_body_value_position_cannot_add_keys() -> None:
    doc = json.loads(_body(JSON_BODY, {"image": "i", "tag": "t", "n": '1,"admin":true'}) or b"")
    assert doc == {"image": "i", "tag": "v-t", "n": '1,"admin":true'}
    # a selected object stays an object; missing is null
    doc = json.loads(_body('{"o": event.input.o, "m": event.input.missing}', {"o": {"a": [1]}}) or b"")
    assert doc == {"o": {"a": [1]}, "m": None}


def test_json_content_type_escapes_even_when_body_is_not_json() -> None:
    headers = {"Content-Type": ["application/vnd.api+json; charset=utf-8"]}
    raw = _body('{"image": "event.input.image" BROKEN', {"image": 'a"b'}, headers=headers)
    assert raw == b'{"image": "a\\"b" BROKEN'


def test_non_json_body_is_substituted_raw() -> None:
    assert _body("image=event.input.image", {"image": 'a"b'}) == b'image=a"b'
    headers = {"Content-Type": ["text/plain"]}
    assert _body("[event.input.image", {"image": 'a"b'}, headers=headers) == b'[a"b'


@pytest.mark.asyncio
async def test_json_injection_on_the_wire(peer: Peer) -> None:
    cfg = config(url=peer.url, **{"body-content": '{"image": "event.input.image", "role": "viewer"}',
                                  "headers": {"Content-Type": "application/json"}})
    await deliver(cfg, json.dumps({"image": EVIL}))
    doc = json.loads(peer.requests[0].body)
    assert doc == {"image": EVIL, "role": "viewer"}
