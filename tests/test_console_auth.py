"""The console's access pieces without Kafka: users and sessions, CSRF, roles, the loopback rule,
secret masking, the timeline report's CSP, and the live filters; then the aiohttp app itself over
HTTPS (cookies Secure there), with the store not started."""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from actions import parse_config
from app.config.settings import ConsoleSettings
from app.console.auth import Access, exposure_problem
from app.console.server import Console, make_app, mask, report_csp, run
from app.console.store import matches
from app.errors import ConfigError
from tests.harness import ROOT, free_port


@pytest.fixture(autouse=True)
def viewer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIEWER_TOKEN", "tok-view")


def settings(**kw: Any) -> ConsoleSettings:
    return ConsoleSettings.model_validate(kw)


USERS = [{"name": "olga", "role": "operator", "tokens": ["tok-op"], "password": ["pw-op"]},
         {"name": "vic", "role": "viewer", "tokens": ["$VIEWER_TOKEN"]}]


def test_passwords_tokens_and_roles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VIEWER_TOKEN", "tok-view")
    access = Access(settings(users=USERS))
    assert not access.open
    assert access.check_password("olga", "pw-op") == "operator"
    assert access.check_password("olga", "pw-view") is None and access.check_password("vic", "pw-op") is None
    assert access.check_token("tok-op") == ("olga", "operator")
    assert access.check_token("tok-view") == ("vic", "viewer")  # from $VIEWER_TOKEN
    assert access.check_token("tok-op ") is None and access.check_token("") is None
    secret = tmp_path / "token"
    secret.write_text("tok-file\n")
    assert Access(settings(users=[{"name": "f", "tokens": [f"file:{secret}"]}])).check_token("tok-file") == ("f", "viewer")
    with pytest.raises(ValueError, match="must be 'viewer' or 'operator', got 'admin'"):
        settings(users=[{"name": "x", "role": "admin", "tokens": ["t"]}])
    with pytest.raises(ValueError, match="NOPE_UNSET"):
        settings(users=[{"name": "x", "tokens": ["$NOPE_UNSET"]}])


def test_sessions_expire_and_log_out() -> None:
    now = [1000.0]
    access = Access(settings(users=USERS, **{"session-ttl": "1h"}), clock=lambda: now[0])
    sid, session = access.login("olga", "operator")
    assert access.session(sid) is session and session.operator
    other, _ = access.login("vic", "viewer")
    assert other != sid and access.session(other) is not None and not access.session(other).operator  # type: ignore[union-attr]
    now[0] += 3599
    assert access.session(sid) is session
    now[0] += 2
    assert access.session(sid) is None and sid not in access.sessions
    sid, _ = access.login("olga", "operator")
    access.logout(sid)
    assert access.session(sid) is None and access.session("forged") is None and access.session(None) is None
    with pytest.raises(ValueError, match="role"):
        access.login("x", "root")


def test_csrf_tokens_are_per_session() -> None:
    access = Access(settings(users=USERS))
    _, a = access.login("olga", "operator")
    _, b = access.login("olga", "operator")
    assert a.csrf != b.csrf and len(a.csrf) >= 32
    assert Access.csrf_ok(a, a.csrf)
    assert not Access.csrf_ok(a, b.csrf) and not Access.csrf_ok(a, "") and not Access.csrf_ok(a, None)


def test_non_loopback_needs_users() -> None:
    assert exposure_problem(settings()) is None
    assert exposure_problem(settings(listen="[::1]:8084")) is None
    problem = exposure_problem(settings(listen="0.0.0.0:8084"))
    assert problem and "herald.console.listen 0.0.0.0:8084 is not a loopback address" in problem
    assert exposure_problem(settings(listen=":8084")) is not None  # all addresses
    assert exposure_problem(settings(listen="0.0.0.0:8084", users=USERS[:1])) is None
    config = parse_config({"herald": {"console": {"listen": "0.0.0.0:8084"}}}, environ={})
    with pytest.raises(ConfigError, match="not a loopback address"):
        run(config)


def test_herald_console_refuses_a_public_address_without_users(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("herald:\n  kafka-bootstrap-servers: 127.0.0.1:1\n")
    proc = subprocess.run([sys.executable, "-m", "app.cli", "console", "--config", str(cfg), "--listen", "0.0.0.0:8084"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "herald.console.listen 0.0.0.0:8084 is not a loopback address" in proc.stderr


def test_mask_hides_secrets_and_url_paths() -> None:
    masked = mask({"url": "https://hooks.slack.com/services/T0/B0/XYZ", "password": "p", "token": "t",
                   "user": "bob", "timeout": 5, "hmac-keys": ["k"], "plain": "https://example.com",
                   "nested": [{"api-key": "k2", "host": "h"}]})
    assert masked == {"url": "https://hooks.slack.com/••••", "password": "••••••", "token": "••••••", "user": "bob",
                      "timeout": 5, "hmac-keys": ["••••••"], "plain": "https://example.com",
                      "nested": [{"api-key": "••••••", "host": "h"}]}


def test_report_csp_allows_exactly_its_inline_code() -> None:
    doc = '<style>b{x:1}</style><i style="color:&quot;red&quot;"></i><script type="application/x-ndjson">{}</script><script>go()</script>'

    def h(text: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"

    csp = report_csp(doc)
    assert f"script-src {h('go()')};" in csp
    attr = h('color:"red"')  # the attribute's value once its entities are decoded
    assert f"style-src {h('b{x:1}')} {attr} 'unsafe-hashes';" in csp
    assert "sandbox allow-scripts" in csp and "unsafe-inline" not in csp


def test_live_filters() -> None:
    s = {"routes": ["r1"], "outcomes": {"a": "delivered", "b": "dead-lettered"}, "outcome": "dead-lettered",
         "time_ns": 1_000 * 10**9}
    assert matches(s) and matches(s, route="r1") and not matches(s, route="r2")
    assert matches(s, action="b") and not matches(s, action="c")
    assert matches(s, outcome="delivered") and matches(s, action="b", outcome="dead-lettered")
    assert not matches(s, action="a", outcome="dead-lettered")
    assert matches(s, window_s=60, now=1_030) and not matches(s, window_s=60, now=1_061)


# -- the app over HTTPS ----------------------------------------------------------------------
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def serve(tmp_path: Path, console_cfg: dict[str, Any]) -> AsyncIterator[tuple[str, ssl.SSLContext]]:
    cert, key = self_signed(tmp_path)
    config = parse_config({
        "routes": [{"name": "r1", "input": 'input.kind == "x"', "actions": ["a1"], "template": "raw"}],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "a1", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/hook"}],
        "herald": {"console": console_cfg}}, environ={"VIEWER_TOKEN": "tok-view"})
    runner = web.AppRunner(make_app(Console(config)))
    await runner.setup()
    port = free_port()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(str(cert), str(key))
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_ctx).start()
    try:
        yield f"https://127.0.0.1:{port}", ssl.create_default_context(cafile=str(cert))
    finally:
        await runner.cleanup()


async def test_https_login_secure_cookie_csrf_and_roles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIEWER_TOKEN", "tok-view")
    async for base, ctx in serve(tmp_path, {"users": USERS}):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies of an IP host
            async with http.get(base + "/login", ssl=ctx) as resp:
                page = await resp.text()
                assert "Secure" in resp.headers["Set-Cookie"]
            nonce = re.search(r'name="csrf" value="([^"]+)"', page)
            assert nonce
            async with http.post(base + "/login", data={"csrf": nonce.group(1), "token": "tok-op"}, ssl=ctx,
                                 allow_redirects=False) as resp:
                assert resp.status == 303
                cookie = resp.headers["Set-Cookie"]
                assert all(flag in cookie for flag in ("HttpOnly", "Secure", "SameSite=Strict"))
            async with http.get(base + "/try", ssl=ctx) as resp:
                csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', await resp.text())
                assert resp.status == 200 and csrf
            event = '{"kind": "x", "msg": "<b>hi</b>"}'
            async with http.post(base + "/try", data={"event": event}, ssl=ctx) as resp:
                assert resp.status == 403 and "CSRF token missing" in await resp.text()
            async with http.post(base + "/try", data={"event": event, "csrf": csrf.group(1)}, ssl=ctx) as resp:
                text = await resp.text()
                assert resp.status == 200 and '<td class="verdict">matched</td>' in text
                assert "&lt;b&gt;hi&lt;/b&gt;" in text and "<b>hi</b>" not in text
            async with http.post(base + "/try", data={"event": "{nope", "csrf": csrf.group(1)}, ssl=ctx) as resp:
                assert resp.status == 400 and "the event is not JSON" in await resp.text()
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer tok-view"}) as viewer:
            async with viewer.post(base + "/api/dlq/redrive", json={"action": "a1"}, ssl=ctx) as resp:
                assert resp.status == 403 and (await resp.json())["error"] == "operator role required"
            async with viewer.post(base + "/api/try", data=b'{"kind": "x"}', ssl=ctx) as resp:
                assert resp.status == 200 and (await resp.json())["routes"]["r1"]["matched"] is True
            async with viewer.get(base + "/config", ssl=ctx) as resp:
                text = await resp.text()
                assert resp.status == 200 and "http://127.0.0.1:9/••••" in text and "/hook" not in text
                assert "'unsafe-inline'" not in resp.headers["Content-Security-Policy"]


async def test_no_users_means_local_operator_with_csrf(tmp_path: Path) -> None:
    async for base, ctx in serve(tmp_path, {}):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:  # cookies of an IP host
            async with http.post(base + "/try", data={"event": "{}"}, ssl=ctx) as resp:
                assert resp.status == 403  # a first request that changes something has no session: refused
            async with http.get(base + "/", ssl=ctx) as resp:
                text = await resp.text()
                assert resp.status == 200 and '<b class="role">operator</b>' in text
                csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', text)
                assert csrf
            async with http.post(base + "/api/dlq/preview", json={"action": "nope"}, ssl=ctx,
                                 headers={"X-CSRF-Token": csrf.group(1)}) as resp:
                assert resp.status == 400 and "unknown action 'nope'" in (await resp.json())["error"]
