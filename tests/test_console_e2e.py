"""Issue 17 acceptance: the web console against a real pipeline (Kafka broker, Herald bridge and
worker, a loopback sink), driven in headless Chromium (playwright-core, tests/browser/console.mjs)
and over HTTP for the access rules (CSP, CSRF, roles)."""

from __future__ import annotations

import http.cookiejar
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ROOT, Herald, Sink, free_port, wait_until

OPERATOR_TOKEN = "op-token-4f1c9a"
VIEWER_TOKEN = "viewer-token-77b2"
XSS = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def falco(n: int, rule: str = "Terminal shell in container", priority: str = "Warning", **extra: Any) -> dict[str, Any]:
    return {"rule": rule, "priority": priority, "output": f"{rule} (n={n})", "hostname": f"node-{n % 2}",
            "source": "syscall", "time": "2026-11-30T08:00:00.000000000Z", "n": n,
            "output_fields": {"container.image.repository": "docker.io/library/nginx", "container.image.tag": f"1.{n}"},
            **extra}


@dataclass
class Stack:
    herald: Herald
    sink: Sink
    url: str
    chromium: str


def webhook(name: str, url: str) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "enable": True, "url": url, "timeout": "5s",
            "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}


@pytest.fixture(scope="module")
def stack(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    setup = subprocess.run([str(ROOT / "scripts" / "browser-setup.sh")], capture_output=True, text=True,
                           check=False, timeout=900)
    assert setup.returncode == 0, f"browser setup failed (Chromium or playwright-core missing):\n{setup.stderr}"
    chromium = setup.stdout.strip().splitlines()[-1]
    port = free_port()
    with Sink() as sink:
        sink.expect("/ok", method="POST", content_type="application/json", json=True)
        sink.script("/flaky", [400, 400], then=200)  # the first two deliveries fail for good: dead letters
        cfg = {
            "routes": [
                {"name": "r-all", "input": 'input.source == "syscall"', "actions": ["a-ok"], "template": "raw-json"},
                {"name": "r-flaky", "input": "input.flaky == true", "actions": ["a-flaky"], "template": "raw-json"},
                {"name": "r-never", "input": 'input.priority == "Nonexistent"', "actions": ["a-ok"],
                 "template": "raw-json"},
            ],
            "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
            "actions": [webhook("a-ok", sink.url + "/ok"), webhook("a-flaky", sink.url + "/flaky")],
            "herald": {"console": {"listen": f"127.0.0.1:{port}", "users": [
                {"name": "olga", "role": "operator", "tokens": [OPERATOR_TOKEN], "password": ["s3cret-pass"]},
                {"name": "vic", "role": "viewer", "tokens": ["$CONSOLE_VIEWER_TOKEN"]},
            ]}},
        }
        workdir = tmp_path_factory.mktemp("console")
        with Herald(kafka, cfg, workdir, env={"CONSOLE_VIEWER_TOKEN": VIEWER_TOKEN}) as herald:
            proc = herald._spawn("console", "console")

            def listening() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"console exited with {proc.returncode}:\n{herald.log_text('console')}")
                return "herald console listening on http://127.0.0.1:" in herald.log_text("console")

            wait_until(listening, 60, "the console to listen")
            yield Stack(herald, sink, f"http://127.0.0.1:{port}", chromium)


# -- HTTP helpers -----------------------------------------------------------------------------
class Client:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.jar = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect())

    def request(self, method: str, path: str, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, dict(resp.headers), resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read().decode()

    def form(self, path: str, fields: dict[str, str] | list[tuple[str, str]]) -> tuple[int, dict[str, str], str]:
        return self.request("POST", path, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def login(self, **fields: str) -> str:
        """Log in through the form; the page's CSRF token afterwards."""
        status, _, page = self.request("GET", "/login")
        assert status == 200
        nonce = re.search(r'name="csrf" value="([^"]+)"', page)
        assert nonce
        status, headers, _ = self.form("/login", {"csrf": nonce.group(1), "next": "/", **fields})
        assert status == 303 and headers["Location"] == "/", (status, headers)
        status, _, page = self.request("GET", "/")
        assert status == 200
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
        assert token
        return token.group(1)


def api(stack: Stack, method: str, path: str, body: Any = None, token: str = OPERATOR_TOKEN) -> tuple[int, Any]:
    status, _, text = Client(stack.url).request(method, path, None if body is None else json.dumps(body).encode(),
                                                {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    return status, json.loads(text) if text else None


class Browser:
    """tests/browser/console.mjs as a child process; ``ready()`` waits for its first line."""

    def __init__(self, stack: Stack, token: str, *args: str) -> None:
        assert shutil.which("node"), "node is missing: the browser tests need Node.js 20+"
        self.proc = subprocess.Popen(["node", "console.mjs", stack.url, token, *args], cwd=ROOT / "tests" / "browser",
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**stack.herald.env, "HERALD_CHROMIUM": stack.chromium})
        self.lines: queue.Queue[str] = queue.Queue()
        self.reader = threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout or []],
                                       daemon=True)
        self.reader.start()

    def ready(self, timeout: float = 60) -> None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the browser did not open the live page in time") from None
        assert json.loads(line) == {"ready": True}, line

    def result(self, timeout: float = 180) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"the browser scenario timed out: {self.proc.stderr.read() if self.proc.stderr else ''}") from None
        self.reader.join(10)
        stderr = self.proc.stderr.read() if self.proc.stderr else ""
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get())
        assert self.proc.returncode == 0, f"browser scenario failed ({self.proc.returncode}):\n{stderr}\n{lines}"
        seen: dict[str, Any] = json.loads(lines[-1])
        assert seen["pageErrors"] == [] and seen["dialogs"] == [] and seen["cspViolations"] == 0, seen
        return seen


def browse(stack: Stack, token: str, *args: str) -> dict[str, Any]:
    return Browser(stack, token, *args).result()


# -- access -----------------------------------------------------------------------------------
def test_csp_headers_and_login_required(stack: Stack) -> None:
    client = Client(stack.url)
    status, headers, page = client.request("GET", "/login")
    assert status == 200
    csp = headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert "<script>" not in page and '<script src="/static/console.js" defer></script>' in page
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers, _ = client.request("GET", "/dlq")
    assert status == 303 and headers["Location"].startswith("/login")
    status, _, body = client.request("GET", "/api/events")
    assert status == 401 and "log in" in json.loads(body)["error"]
    status, _, body = Client(stack.url).request("GET", "/api/events", headers={"Authorization": "Bearer nope"})
    assert status == 401
    # a wrong password does not log in
    status, _, page = client.request("GET", "/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce
    status, headers, _ = client.form("/login", {"csrf": nonce.group(1), "user": "olga", "password": "wrong"})
    assert status == 303 and headers["Location"].startswith("/login?error=")
    assert client.request("GET", "/api/events")[0] == 401


def test_session_cookie_flags_and_csrf(stack: Stack) -> None:
    client = Client(stack.url)
    status, _, page = client.request("GET", "/login")
    nonce = re.search(r'name="csrf" value="([^"]+)"', page)
    assert nonce
    # a login without the login form's token is refused
    assert client.form("/login", {"csrf": "forged", "user": "olga", "password": "s3cret-pass"})[0] == 403
    status, headers, _ = client.form("/login", {"csrf": nonce.group(1), "user": "olga", "password": "s3cret-pass"})
    assert status == 303
    cookie = headers["Set-Cookie"]
    assert cookie.startswith("herald_console=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" not in cookie  # plain HTTP here; Secure is set when the console serves TLS
    status, _, page = client.request("GET", "/")
    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert status == 200 and csrf
    body = json.dumps({"action": "a-flaky"}).encode()
    json_headers = {"Content-Type": "application/json"}
    status, _, text = client.request("POST", "/api/dlq/preview", body, json_headers)
    assert status == 403 and "CSRF" in json.loads(text)["error"]
    status, _, _ = client.request("POST", "/api/dlq/preview", body, {**json_headers, "X-CSRF-Token": "x" * 43})
    assert status == 403
    status, _, text = client.request("POST", "/api/dlq/preview", body, {**json_headers, "X-CSRF-Token": csrf.group(1)})
    assert status == 200 and json.loads(text)["action"] == "a-flaky"
    # form posts too: a redrive form without its csrf field is refused
    status, _, page = client.form("/dlq/redrive", {"action": "a-flaky", "mode": "all"})
    assert status == 403 and "CSRF token missing" in page


# -- the pipeline, live -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def posted(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Events posted while the live page is open: it must show them without a reload. The page's
    screenshot goes to a temporary folder, or to the README's docs/console.png with
    HERALD_UPDATE_SCREENSHOT=1 (a test run leaves tracked files alone)."""
    shot = (ROOT / "docs" / "console.png" if os.environ.get("HERALD_UPDATE_SCREENSHOT") == "1"
            else tmp_path_factory.mktemp("console") / "console.png")
    browser = Browser(stack, OPERATOR_TOKEN, "live", "6", str(shot))
    browser.ready()
    ids: dict[str, dict[str, Any]] = {}
    events = [falco(1), falco(2, priority="Critical"), falco(3, flaky=True), falco(4, flaky=True),
              falco(5), falco(6, rule=XSS, priority="Error")]
    for event in events:
        status, body = stack.herald.post(event)
        assert status == 200, body
        ids[body["event_id"]] = event
    seen = browser.result()
    return {"ids": ids, "live": seen, "shot": shot}


def test_events_appear_live_with_routes_and_deliveries(stack: Stack, posted: dict[str, Any]) -> None:
    seen = posted["live"]
    assert seen["reloaded"] == 1  # one navigation: the rows came over SSE
    assert seen["role"] == "operator"
    assert seen["scripts"] == [stack.url + "/static/console.js"]
    rows = {r["id"]: r for r in seen["rows"]}
    assert set(rows) == set(posted["ids"])
    for event_id, event in posted["ids"].items():
        row = rows[event_id]
        assert row["source"] == "falco" and row["entity"] == f"docker.io/library/nginx:1.{event['n']}"
        if event.get("flaky"):
            assert row["routes"] == ["r-all", "r-flaky"]
            assert row["outcomes"] == {"a-ok": "delivered", "a-flaky": "dead-lettered"}
            assert row["outcome"] == "dead-lettered"
        else:
            assert row["routes"] == ["r-all"] and row["outcomes"] == {"a-ok": "delivered"}
            assert row["outcome"] == "delivered"
    by_n = {e["n"]: rows[i] for i, e in posted["ids"].items()}
    assert by_n[2]["severity"] == "critical" and by_n[1]["severity"] == "medium"
    # the <script> rule is text: no dialog fired (checked in result()), no element was made of it
    assert by_n[6]["title"] == XSS and "<script" not in by_n[6]["titleHtml"] and "&lt;script&gt;" in by_n[6]["titleHtml"]
    assert posted["shot"].stat().st_size > 10_000
    assert stack.sink.count("/ok") == 6


def test_event_story(stack: Stack, posted: dict[str, Any]) -> None:
    event_id = next(i for i, e in posted["ids"].items() if e["n"] == 2)
    seen = browse(stack, OPERATOR_TOKEN, "story", event_id)
    assert seen["meta"]["event id"] == event_id and seen["meta"]["severity"] == "critical"
    assert json.loads(seen["raw"]) == posted["ids"][event_id]
    assert seen["rawOpenAfterClick"] is False
    routes = {r[0]: r[1] for r in seen["routes"]}
    assert routes == {"r-all": "matched", "r-flaky": "not matched", "r-never": "not matched"}
    [(action, content)] = seen["contents"]
    rendered = json.loads(json.loads(content)["description"])  # the raw-json template adds Postee's "postee" key
    assert action == "a-ok" and rendered.pop("postee") == {"AquaServer": ""} and rendered == posted["ids"][event_id]
    [attempt] = seen["deliveries"]
    # (the worker records a status for failed attempts only)
    assert attempt[:3] == ["a-ok", "1", "delivered"] and float(attempt[4]) > 0 and attempt[5] == ""
    assert seen["dead"] == []
    assert seen["timelineLink"] == "/timeline?" + urllib.parse.urlencode(
        {"by": "image", "entity": "docker.io/library/nginx:1.2", "since": "24h"})
    # the XSS event's story shows the rule as text too
    xss_id = next(i for i, e in posted["ids"].items() if e["n"] == 6)
    seen = browse(stack, OPERATOR_TOKEN, "story", xss_id)
    assert seen["title"] == f"Event {xss_id}" and json.loads(seen["raw"])["rule"] == XSS


def test_dead_letters_redriven_from_the_page_once(stack: Stack, posted: dict[str, Any]) -> None:
    flaky = sorted(e["n"] for e in posted["ids"].values() if e.get("flaky"))
    stack.herald.read_topic("dlq.a-flaky", min_count=2)
    assert stack.sink.count("/flaky") == 2  # both answered 400: the sink is "back" (200) from now on
    seen = browse(stack, OPERATOR_TOKEN, "redrive", "a-flaky")
    summary = {(r[0], r[1]): r[2] for r in seen["summary"]}
    assert summary[("a-flaky", "PermanentActionError HTTP 400")] == "2"
    assert len(seen["listed"]) == 2 and seen["previewCount"] == 2
    assert seen["result"].startswith("Redriven 2, skipped 0, missing 0")
    requests = stack.sink.wait_for("/flaky", 4)
    assert sorted(r.json()["n"] for r in requests[2:]) == flaky  # each delivered once
    for event_id, event in posted["ids"].items():
        if event.get("flaky"):
            stack.herald.wait_deliveries(event_id, "a-flaky")
    # a second redrive (API, preview first) is a no-op at the sink: the delivered keys suppress it
    status, preview = api(stack, "POST", "/api/dlq/preview", {"action": "a-flaky", "where": "input.status == 400"})
    assert status == 200 and preview["count"] == 2
    status, counts = api(stack, "POST", "/api/dlq/redrive", {"action": "a-flaky", "ids": preview["ids"]})
    assert status == 200 and counts == {"redriven": 2, "skipped": 0, "missing": 0}
    for event_id, event in posted["ids"].items():
        if event.get("flaky"):
            stack.herald.wait_deliveries(event_id, "a-flaky", outcome="duplicate-suppressed")
    assert stack.sink.count("/flaky") == 4
    # the story now shows the dead letter and the delivery by redrive
    event_id = next(i for i, e in posted["ids"].items() if e.get("flaky"))
    status, story = api(stack, "GET", f"/api/events/{event_id}")
    assert status == 200 and story["summary"]["outcomes"]["a-flaky"] == "delivered"
    assert [d["outcome"] for d in story["deliveries"] if d["action"] == "a-flaky"] == [
        "failed", "delivered", "duplicate-suppressed"]
    assert [d["redrive"] for d in story["deliveries"] if d["action"] == "a-flaky"] == [0, 1, 1]  # both redrives re-sent the dead letter (redrive 0 + 1)


def test_viewer_cannot_redrive(stack: Stack, posted: dict[str, Any]) -> None:
    seen = browse(stack, VIEWER_TOKEN, "viewer")
    assert seen["role"] == "viewer" and seen["listed"] == 2
    assert seen["forms"] == 0 and not any("Redrive" in b or "Purge" in b for b in seen["buttons"])
    assert "viewer" in seen["note"]
    for op in ("redrive", "purge", "preview"):
        status, body = api(stack, "POST", f"/api/dlq/{op}", {"action": "a-flaky"}, token=VIEWER_TOKEN)
        assert status == 403, (op, status, body)
    status, _ = api(stack, "GET", "/api/dlq?action=a-flaky", token=VIEWER_TOKEN)
    assert status == 200
    # the live filters, through the API the page's stream shares them with
    flaky_ids = {i for i, e in posted["ids"].items() if e.get("flaky")}
    for query, expected in (("route=r-flaky", flaky_ids), ("action=a-flaky&outcome=delivered", flaky_ids),
                            ("outcome=dead-lettered", set()), ("route=r-all&window=3600", set(posted["ids"])),
                            ("route=r-never", set())):
        status, rows = api(stack, "GET", f"/api/events?{query}", token=VIEWER_TOKEN)
        assert status == 200 and {r["event_id"] for r in rows} == expected, query
    assert stack.sink.count("/flaky") == 4


def test_try_a_route_with_a_pasted_event(stack: Stack, posted: dict[str, Any], tmp_path: Path) -> None:
    before = len(stack.herald.read_topic("events"))
    event = falco(42, flaky=True, rule="Pasted <b>event</b>")
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event, indent=2))
    seen = browse(stack, OPERATOR_TOKEN, "try", str(path))
    routes = {r[0]: r[1:4] for r in seen["routes"]}
    assert routes["r-all"][0] == "matched" and routes["r-all"][2] == "a-ok"
    assert routes["r-flaky"][0] == "matched" and routes["r-never"][0] == "not matched"
    assert sorted(a for a, _ in seen["contents"]) == ["a-flaky", "a-ok"]
    for _, content in seen["contents"]:
        rendered = json.loads(json.loads(content)["description"])
        assert rendered.pop("postee") == {"AquaServer": ""} and rendered == event
    # no side effect: nothing produced, nothing delivered
    time.sleep(1)
    assert len(stack.herald.read_topic("events")) == before
    assert stack.sink.count("/flaky") == 4 and stack.sink.count("/ok") == 6
    status, body = api(stack, "POST", "/api/try?origin=nope", event)
    assert status == 400 and "origin must be one of" in body["error"]


def test_config_timeline_and_stats_pages(stack: Stack, posted: dict[str, Any]) -> None:
    client = Client(stack.url)
    client.login(token=VIEWER_TOKEN)
    status, _, page = client.request("GET", "/config")
    assert status == 200 and 'id="config-hash"' in page
    assert VIEWER_TOKEN not in page and OPERATOR_TOKEN not in page and "s3cret-pass" not in page
    assert "/ok" not in page and "postee.rawmessage.json" in page  # webhook URLs masked to their host
    status, _, page = client.request("GET", "/stats")
    assert status == 200
    intake = re.search(r'data-series="intake"><td>events in</td><td>all</td><td class="total">(\d+)<', page)
    assert intake and int(intake.group(1)) == 6
    status, _, page = client.request("GET", "/timeline?since=1h&by=host")
    assert status == 200 and 'src="/timeline/report?since=1h&amp;by=host&amp;entity="' in page
    status, headers, report = client.request("GET", "/timeline/report?since=1h&by=host&entity=node-0")
    assert status == 200 and "sandbox allow-scripts" in headers["Content-Security-Policy"]
    assert "unsafe-inline" not in headers["Content-Security-Policy"]
    assert report.count('class="lane row"') == 1 and 'data-entity="node-0"' in report
    status, _, _ = client.request("GET", "/timeline?by=nope")
    assert status == 400


def test_timeline_report_runs_in_its_sandbox(stack: Stack, posted: dict[str, Any]) -> None:
    """The report's inline script runs under the hash-only CSP (in the console's iframe), and clicking
    an event opens its details."""
    seen = browse(stack, VIEWER_TOKEN, "timeline", "since=1h&by=host")
    hosts: dict[str, int] = {}
    for event in posted["ids"].values():
        hosts[event["hostname"]] = hosts.get(event["hostname"], 0) + 1
    assert sorted(seen["lanes"]) == sorted([h, n] for h, n in hosts.items())
    assert seen["detailTitle"]
