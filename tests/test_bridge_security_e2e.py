"""Issue 13, secure ingest, on the real bridge: bearer tokens and HMAC signatures (global and per
route), the authenticated header on the events topic, mTLS, the non-loopback guard, and hostile
input (bad gzip, deep JSON, slow bodies, too many requests at once) answered with a 4xx or 503,
one log line and no traceback (``Herald.__exit__`` fails the test on any traceback)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from app.ingest.bridge import exposure_problem, exposure_warning, is_loopback, json_depth, serve
from actions import parse_config
from app.devtools.kafka_local import make_ca, make_server_cert
from app.kafka.window import WindowReader
from app.routing.router import H_AUTHENTICATED, H_EVENT_ID
from tests.harness import ROOT, TRACEBACK, Herald, free_port, make_client_cert, wait_until

TOKEN_1, TOKEN_2 = "tok-one-0123456789", "tok-two-9876543210"  # two valid at once: a rotation
HMAC_KEY = "global-hmac-key-abcdef"
ROUTE_KEY = "route-b-hmac-key-123456"
READ_TIMEOUT = 2.0
HEADER_TIMEOUT = 2.0
MAX_IN_FLIGHT = 3


def security_config(key_file: Path) -> dict[str, Any]:
    return {
        "herald": {
            "auth": {
                "bearer-tokens": [TOKEN_1, "$HERALD_TEST_TOKEN_2"],
                "hmac-keys": [f"file:{key_file}"],
                "routes": {"tenant-b": {"hmac-keys": ["${HERALD_TEST_ROUTE_KEY}"]}},
            },
            "read-timeout": f"{READ_TIMEOUT}s",
            "header-timeout": f"{HEADER_TIMEOUT}s",
            "max-in-flight": MAX_IN_FLIGHT,
        },
        "routes": [{"name": "tenant-a"}, {"name": "tenant-b"}],
    }


@pytest.fixture(scope="module")
def herald(kafka: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Herald]:
    workdir = tmp_path_factory.mktemp("security")
    key_file = workdir / "hmac.key"
    key_file.write_text(HMAC_KEY + "\n")
    env = {"HERALD_TEST_TOKEN_2": TOKEN_2, "HERALD_TEST_ROUTE_KEY": ROUTE_KEY}
    h = Herald(kafka, security_config(key_file), workdir, workers=0, env=env)
    with h:
        yield h
    log = h.log_text("bridge")
    for secret in (TOKEN_1, TOKEN_2, HMAC_KEY, ROUTE_KEY):
        assert secret not in log


def request(herald: Herald, path: str, body: bytes = b"{}", headers: dict[str, str] | None = None,
            method: str = "POST") -> tuple[int, dict[str, str], Any]:
    req = urllib.request.Request(herald.url + path, data=body if method == "POST" else None, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, dict(exc.headers), json.loads(raw)
        except ValueError:
            return exc.code, dict(exc.headers), raw.decode(errors="replace")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def signed(key: str, body: bytes) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()}


def event_headers(herald: Herald, event_id: str, timeout: float = 30.0) -> dict[str, str]:
    """The Kafka headers of ``event_id`` on the events topic."""
    def find() -> dict[str, str] | None:
        for record in WindowReader(herald.kafka.client_config(), herald.prefix + "events", None, None):
            if record.headers.get(H_EVENT_ID) == event_id:
                return record.headers
        return None

    return wait_until(find, timeout, f"event {event_id} on the events topic", interval=0.5)


# -- authentication -------------------------------------------------------------------------------
def test_health_endpoints_stay_open_and_readyz_hides_kafka(herald: Herald, kafka: Any) -> None:
    for path in ("/ping", "/healthz", "/readyz"):
        status, _, body = request(herald, path, method="GET")
        assert status == 200, (path, body)
    _, _, body = request(herald, "/readyz", method="GET")
    assert body["status"] == "ready" and body["kafka"] == "reachable", body
    assert body["spool"] == {"records": 0, "bytes": 0, "max-bytes": 256 * 1024 * 1024}, body
    assert kafka.bootstrap not in json.dumps(body) and str(kafka.port) not in json.dumps(body)


def test_bearer_missing_wrong_and_rotated_tokens(herald: Herald) -> None:
    status, headers, body = request(herald, "/", b'{"kind": "x"}')
    assert (status, body) == (401, {"error": "unauthorized"})
    assert headers.get("WWW-Authenticate") == "Bearer"
    for wrong in (bearer("nope"), bearer(TOKEN_1 + "x"), {"Authorization": f"Basic {TOKEN_1}"}):
        status, _, body = request(herald, "/", b'{"kind": "x"}', wrong)
        assert (status, body) == (403, {"error": "forbidden"})
    for token in (TOKEN_1, TOKEN_2):
        status, _, body = request(herald, "/scan", b'{"kind": "x"}', bearer(token))
        assert status == 200 and body["event_id"]


def test_hmac_signature_ok_wrong_missing(herald: Herald) -> None:
    body = b'{"kind": "signed"}'
    status, _, answer = request(herald, "/", body, signed(HMAC_KEY, body))
    assert status == 200, answer
    assert request(herald, "/", body, signed("other-key", body))[0] == 403
    assert request(herald, "/", body + b" ", signed(HMAC_KEY, body))[0] == 403  # the body was changed
    wrong_prefix = {"X-Hub-Signature-256": signed(HMAC_KEY, body)["X-Hub-Signature-256"].replace("sha256=", "sha1=")}
    assert request(herald, "/", body, wrong_prefix)[0] == 403
    assert request(herald, "/", body)[0] == 401


def test_per_route_credentials_override_the_global_ones(herald: Herald) -> None:
    body = b'{"kind": "tenant"}'
    assert request(herald, "/tenant/tenant-a", body, bearer(TOKEN_1))[0] == 200  # no override: global
    assert request(herald, "/tenant/tenant-b", body, bearer(TOKEN_1))[0] == 403
    assert request(herald, "/tenant/tenant-b", body, signed(HMAC_KEY, body))[0] == 403
    assert request(herald, "/tenant/tenant-b", body)[0] == 401
    status, _, answer = request(herald, "/tenant/tenant-b", body, signed(ROUTE_KEY, body))
    assert status == 200, answer


def test_unknown_route_is_404_without_route_names_and_after_authentication(herald: Herald) -> None:
    assert request(herald, "/tenant/no-such-route", b"{}")[0] == 401
    status, _, body = request(herald, "/tenant/no-such-route", b"{}", bearer(TOKEN_1))
    assert status == 404 and "tenant-a" not in json.dumps(body) and "tenant-b" not in json.dumps(body)


def test_authenticated_header_reaches_the_events_topic(herald: Herald) -> None:
    _, _, by_bearer = request(herald, "/", b'{"kind": "hdr"}', bearer(TOKEN_2))
    body = b'{"kind": "hdr-hmac"}'
    _, _, by_hmac = request(herald, "/tenant/tenant-b", body, signed(ROUTE_KEY, body))
    assert event_headers(herald, by_bearer["event_id"])[H_AUTHENTICATED] == "bearer"
    assert event_headers(herald, by_hmac["event_id"])[H_AUTHENTICATED] == "hmac"


# -- hostile input ----------------------------------------------------------------------------------
def raw_request(herald: Herald, head: bytes, body: bytes = b"", wait: float = 15.0) -> bytes:
    """Send ``head`` (request line and headers) and ``body`` on a socket; the raw answer."""
    with socket.create_connection(("127.0.0.1", herald.port), timeout=wait) as s:
        s.sendall(head + b"\r\n" + body)
        chunks = []
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if b"\r\n\r\n" in b"".join(chunks) and b"Content-Length" in b"".join(chunks):
                    head_part, _, rest = b"".join(chunks).partition(b"\r\n\r\n")
                    length = int(head_part.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        break
        except TimeoutError:
            pass
        return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def test_bad_gzip_is_400(herald: Herald) -> None:
    body = b"\x1f\x8b\x08\x00 certainly not gzip"
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            b"Authorization: Bearer " + TOKEN_1.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n")
    answer = raw_request(herald, head, body)
    assert 400 <= status_of(answer) < 500, answer[:300]


def test_malformed_chunked_body_is_4xx(herald: Herald) -> None:
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Authorization: Bearer " + TOKEN_1.encode() + b"\r\n")
    answer = raw_request(herald, head, b"zz\r\nnot a chunk\r\n0\r\n\r\n")
    assert 400 <= status_of(answer) < 500, answer[:300]


def nested(depth: int) -> bytes:
    return b'{"a": ' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"


def test_json_depth_limit(herald: Herald) -> None:
    assert request(herald, "/", nested(100), bearer(TOKEN_1))[0] == 200
    for depth in (101, 128, 5000):  # regorus refuses 128; orjson 1025
        status, _, body = request(herald, "/", nested(depth), bearer(TOKEN_1))
        assert status == 400 and "deeper than 100" in body["error"], (depth, body)
    # brackets inside strings do not count
    assert request(herald, "/", json.dumps({"s": "[" * 500}).encode(), bearer(TOKEN_1))[0] == 200


def test_json_depth_counter() -> None:
    assert json_depth(b'{"a": [[1]]}', 1) == 3
    assert json_depth(b'{"a": "[[[[[[", "b": [{}]}', 1) == 3
    assert json_depth(nested(150), 100) == 150
    assert json_depth(b"{}", 100) <= 100


def test_slow_body_gets_408_within_the_read_timeout(herald: Herald) -> None:
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + TOKEN_1.encode() + b"\r\n")
    start = time.monotonic()
    answer = raw_request(herald, head, b'{"a": ', wait=READ_TIMEOUT + 10)
    assert status_of(answer) == 408, answer[:300]
    assert time.monotonic() - start < READ_TIMEOUT + 3


def test_requests_over_the_in_flight_cap_get_503(herald: Herald) -> None:
    head = (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n"
            b"Authorization: Bearer " + TOKEN_1.encode() + b"\r\n\r\n{")
    slow = [socket.create_connection(("127.0.0.1", herald.port), timeout=READ_TIMEOUT + 10)
            for _ in range(MAX_IN_FLIGHT)]
    try:
        for s in slow:
            s.sendall(head)
        time.sleep(0.5)
        status, headers, body = request(herald, "/", b"{}", bearer(TOKEN_1))
        assert status == 503 and headers.get("Retry-After") == "1", body
        for s in slow:
            assert status_of(s.recv(65536)) == 408
    finally:
        for s in slow:
            s.close()
    wait_until(lambda: request(herald, "/", b"{}", bearer(TOKEN_1))[0] == 200, 10, "the cap to free up")


def closed_after(sock: socket.socket, drip: bytes, every: float, limit: float) -> float:
    """Send ``drip`` one byte every ``every`` seconds until the bridge closes the connection;
    seconds until it did (AssertionError after ``limit``)."""
    start = time.monotonic()
    sock.settimeout(every)
    i = 0
    while time.monotonic() - start < limit:
        try:
            sock.sendall(drip[i % len(drip):i % len(drip) + 1])
            i += 1
            if sock.recv(65536) == b"":
                return time.monotonic() - start
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - start
    raise AssertionError(f"the connection was still open after {limit:.0f}s")


def test_slow_headers_are_cut_off_after_the_header_timeout(herald: Herald) -> None:
    """A slowloris: headers one byte at a time, never finished. The bridge closes the connection
    after header-timeout, with one log line and no traceback; a silent connection too."""
    before = herald.log_text("bridge").count("rejected (header-timeout)")
    with socket.create_connection(("127.0.0.1", herald.port)) as slow:
        took = closed_after(slow, b"POST / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000, 0.2, HEADER_TIMEOUT + 10)
    assert HEADER_TIMEOUT - 0.5 < took < HEADER_TIMEOUT + 2, took
    with socket.create_connection(("127.0.0.1", herald.port)) as silent:
        silent.settimeout(HEADER_TIMEOUT + 10)
        start = time.monotonic()
        assert silent.recv(100) == b"" and time.monotonic() - start < HEADER_TIMEOUT + 2
    wait_until(lambda: herald.log_text("bridge").count("rejected (header-timeout)") > before, 5, "the log line")
    lines = [line for line in herald.log_text("bridge").splitlines() if "header-timeout" in line]
    assert "sent no complete request headers within 2s; closed" in lines[-1], lines[-1]
    # a client that sends its headers in time is not affected, also on a kept-alive connection
    with socket.create_connection(("127.0.0.1", herald.port)) as ok:
        for _ in range(2):
            body = b'{"kind": "keep-alive"}'
            ok.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                       + TOKEN_1.encode() + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert status_of(ok.recv(65536)) == 200
            time.sleep(HEADER_TIMEOUT / 2)


def test_bridge_log_is_one_line_per_rejection_kind(herald: Herald) -> None:
    log = herald.log_text("bridge")
    assert TRACEBACK not in log
    assert "rejected (timeout)" in log and "rejected (depth)" in log and "rejected (busy)" in log
    assert "rejected (header-timeout)" in log


# -- the non-loopback guard -----------------------------------------------------------------------------
def test_loopback_addresses() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "::", "example.com", ""))


def test_exposure_guard_rules() -> None:
    exposed = {"http-listen": "0.0.0.0:8082"}
    problem = exposure_problem(parse_config({"herald": exposed}, environ={}))
    assert problem and "herald.auth" in problem and "allow-unauthenticated" in problem
    assert exposure_problem(parse_config({"herald": {"http-listen": "[::1]:8082"}}, environ={})) is None
    assert exposure_problem(parse_config({"herald": {"http-listen": ":8082"}}, environ={}))  # all addresses
    assert exposure_problem(parse_config({"herald": {"https-listen": "10.1.2.3:8443"}}, environ={}))
    escape = parse_config({"herald": {**exposed, "allow-unauthenticated": True}}, environ={})
    assert exposure_problem(escape) is None and "UNAUTHENTICATED" in str(exposure_warning(escape))
    env_escape = parse_config({"herald": exposed}, environ={"HERALD_ALLOW_UNAUTHENTICATED": "true"})
    assert exposure_problem(env_escape) is None
    authed = parse_config({"herald": {**exposed, "auth": {"bearer-tokens": ["abc-token"]}}}, environ={})
    assert exposure_problem(authed) is None and exposure_warning(authed) is None
    env_authed = parse_config({"herald": exposed}, environ={"HERALD_AUTH_HMAC_KEYS": "k-one,k-two"})
    assert exposure_problem(env_authed) is None and len(env_authed.herald.auth.hmac_keys) == 2


def herald_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_bridge_refuses_a_non_loopback_address_without_auth(tmp_path: Path) -> None:
    cfg = tmp_path / "cfg.yaml"
    # TEST-NET-1: never bound here; the guard stops the bridge before any bind or Kafka connection
    cfg.write_text(yaml.safe_dump({"herald": {"http-listen": "192.0.2.10:8082",
                                              "kafka-bootstrap-servers": "127.0.0.1:1"}}))
    start = time.monotonic()
    result = herald_cli("bridge", "--config", str(cfg))
    assert result.returncode != 0 and time.monotonic() - start < 30
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "herald.auth" in lines[0] and "allow-unauthenticated" in lines[0], result.stderr
    assert TRACEBACK not in result.stderr
    check = herald_cli("check-config", str(cfg))
    assert check.returncode == 1 and "allow-unauthenticated" in check.stdout
    cfg.write_text(yaml.safe_dump({"herald": {"http-listen": "192.0.2.10:8082", "allow-unauthenticated": True}}))
    check = herald_cli("check-config", str(cfg))
    assert check.returncode == 0 and "UNAUTHENTICATED" in check.stdout, check.stdout + check.stderr


# -- mTLS -------------------------------------------------------------------------------------------
async def test_mtls_client_certificate_authenticates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     kafka: Any) -> None:
    ca_cert, ca_key = make_ca("test bridge CA")
    server_cert, server_key = make_server_cert(ca_cert, ca_key, ("127.0.0.1",))
    client_cert, client_key = make_client_cert(ca_cert, ca_key)
    other_ca, other_ca_key = make_ca("someone else's CA")
    stranger_cert, stranger_key = make_client_cert(other_ca, other_ca_key, "stranger")
    files = {}
    for name, pem in (("ca.pem", ca_cert), ("server.pem", server_cert), ("server.key", server_key),
                      ("client.pem", client_cert), ("client.key", client_key),
                      ("stranger.pem", stranger_cert), ("stranger.key", stranger_key)):
        files[name] = tmp_path / name
        files[name].write_bytes(pem)
    monkeypatch.setenv("AQUAALERT_CERT_PEM", str(files["server.pem"]))
    monkeypatch.setenv("AQUAALERT_KEY_PEM", str(files["server.key"]))
    http_port, https_port = free_port(), free_port()
    prefix = f"mtls{http_port}."
    config = parse_config({"herald": {"kafka-bootstrap-servers": kafka.bootstrap, "topic-prefix": prefix,
                                      "partitions": 1, "http-listen": f"127.0.0.1:{http_port}",
                                      "https-listen": f"127.0.0.1:{https_port}",
                                      "auth": {"client-ca": str(files["ca.pem"])},
                                      "spool": {"dir": str(tmp_path / "spool")}}}, environ={})

    def client_ctx(cert: str | None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(files["ca.pem"]))
        if cert:
            ctx.load_cert_chain(str(files[f"{cert}.pem"]), str(files[f"{cert}.key"]))
        return ctx

    stop = asyncio.Event()
    task = asyncio.create_task(serve(config, stop))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(300):
                try:
                    async with session.get(f"http://127.0.0.1:{http_port}/readyz") as resp:
                        if resp.status == 200 and (await resp.json())["kafka"] == "reachable":
                            break
                except aiohttp.ClientConnectorError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the bridge did not get ready")
            url = f"https://127.0.0.1:{https_port}/"
            async with session.post(url, data=b'{"kind": "mtls"}', ssl=client_ctx("client")) as resp:
                assert resp.status == 200
                event_id = (await resp.json())["event_id"]
            for cert in (None, "stranger"):  # no certificate, or one from another CA: no TLS session
                with pytest.raises((aiohttp.ClientError, ssl.SSLError, ConnectionError)):
                    async with session.post(url, data=b"{}", ssl=client_ctx(cert)) as resp:
                        await resp.read()
            # client-ca alone turns authentication on: the plain HTTP listener has no credential to accept
            async with session.post(f"http://127.0.0.1:{http_port}/", data=b"{}") as resp:
                assert resp.status == 401
    finally:
        stop.set()
        await task

    def find() -> str | None:
        for record in WindowReader(kafka.client_config(), prefix + "events", None, None):
            if record.headers.get(H_EVENT_ID) == event_id:
                return record.headers.get(H_AUTHENTICATED)
        return None

    assert wait_until(find, 30, "the mTLS event on the events topic", interval=0.5) == "mtls"
