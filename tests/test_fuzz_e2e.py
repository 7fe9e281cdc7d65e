"""Issue 13 item 5: a bounded fuzz run through the real bridge and worker on the real broker.

About 20,000 requests are generated from one seed (``HERALD_FUZZ_SEED``, printed; the count is
``HERALD_FUZZ_COUNT``): JSON events with odd values (huge and tiny numbers, duplicate keys,
unicode and escapes, wrong types in Aqua scans), invalid JSON (truncated, NaN, invalid UTF-8,
BOM), nesting around the depth limit, arrays instead of objects, bodies over the size limit,
gzip/deflate/br encodings real and bogus, odd content types, methods and paths (tenant routes
with odd characters), right and wrong credentials, and on raw sockets: truncated and stalled
bodies, broken chunking, garbage request lines.

Invariants:

- no answer is a 5xx other than 503, and every request gets an answer (no dropped connection);
- no traceback in the bridge or worker logs (``Herald.__exit__``), both processes stay alive;
- every event answered 2xx has a decision record on ``decisions`` or a dead letter with a reason
  on ``dlq.router``, and every action message the router sent reaches the sink.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac
import json
import os
import random
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from yarl import URL

from tests.harness import FIXTURES, Herald, Sink, wait_until

SEED = int(os.environ.get("HERALD_FUZZ_SEED", "1313"))
COUNT = int(os.environ.get("HERALD_FUZZ_COUNT", "20000"))
CONCURRENCY = 24
BODY_LIMIT = 64 * 1024
MAX_DEPTH = 100  # the bridge's default herald.max-json-depth
READ_TIMEOUT = 1.0
TOKEN = "fuzz-token-0123456789abcdef"
HMAC_KEY = "fuzz-hmac-key-abcdef0123"
ROUTE_KEY = "fuzz-route-key-9876543210"
ODD_ROUTE = "t-ü x"  # a tenant route whose name needs percent-encoding
SIG = "X-Hub-Signature-256"


def fuzz_config(sink: Sink) -> dict[str, Any]:
    webhook = {"type": "webhook", "enable": True, "timeout": "5s", "retry-initial-backoff": "0.05s"}
    return {
        "herald": {
            "body-limit": BODY_LIMIT,
            "read-timeout": f"{READ_TIMEOUT}s",
            "auth": {"bearer-tokens": [TOKEN], "hmac-keys": [HMAC_KEY],
                     "routes": {"t-hmac": {"hmac-keys": [ROUTE_KEY]}}},
        },
        "routes": [
            {"name": "r-deliver", "input": 'input.fuzz == "deliver"', "actions": ["a-sink"], "template": "raw-json"},
            {"name": "r-legacy", "input": 'input.fuzz == "legacy"', "actions": ["a-legacy"], "template": "legacy"},
            {"name": "r-nested", "input": "input.a.b.c == 1"},
            {"name": "r-count", "input": "count(input.resources) > 2"},
            {"name": "t-hmac", "input": 'input.fuzz == "tenant"', "actions": ["a-sink"], "template": "raw-json"},
            {"name": ODD_ROUTE, "actions": ["a-sink"], "input": 'input.fuzz == "tenant"', "template": "raw-json"},
        ],
        "templates": [
            {"name": "raw-json", "rego-package": "postee.rawmessage.json"},
            {"name": "legacy", "legacy-scan-renderer": "html"},
        ],
        "actions": [
            {"name": "a-sink", "url": sink.url + "/sink", **webhook},
            {"name": "a-legacy", "url": sink.url + "/legacy", **webhook},
        ],
    }


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every path into ``node`` (keys and indexes), leaves and inner nodes."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _leaves(v, (*path, i))
    yield path


# -- the generator ---------------------------------------------------------------------------------
@dataclass
class Req:
    kind: str  # what was generated, for the summary
    method: str = "POST"
    path: str = "/"  # already percent-encoded
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    raw: bytes | None = None  # sent on a socket as is (then ``stall``: keep it open, do not finish)
    stall: bool = False
    abort: bool = False  # raw: close the connection right after sending


STRINGS = ["", "a", "fuzz", "é", "中文", "😀", "\u0000", "\u202e", "<script>alert(1)</script>", "{{.}}", "${HOME}",
           "$(id)", "`id`", "' OR 1=1 --", "a\nb\r\nc", "\\", '"', "\ufeff", "\uffff", "null", "true", "1e309",
           "%s%n%x", "../../etc/passwd", "\x7f", "a" * 300]
KEYS = ["", "fuzz", "image", "registry", "resources", "vulnerability_summary", "a", "b", "c", "a.b", "__proto__",
        "postee", "input", "constructor", "é", "😀", "digest", "os", "scan_options", "name", "$ref", " "]
NUMBERS = ["0", "-0", "1", "-1", "9007199254740993", "9223372036854775807", "9223372036854775808",
           "18446744073709551615", "18446744073709551616", "-9223372036854775809", "100000000000000000000000000000",
           "1e308", "-1e308", "1.7976931348623157e308", "5e-324", "1e-400", "0.1", "3.14159265358979323846264338",
           "1E+2", "-0.0", "2.5e-5", "123456789.123456789e-300"]
BAD_NUMBERS = ["NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e999", "01", "+1", "1.", ".5", "0x10", "1e",
               "--1", "18446744073709551616" * 20]
BAD_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf4\x90\x80\x80", b"\x80"]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/x-www-form-"
                 "urlencoded", "multipart/form-data; boundary=xyz", "application/json; charset=latin-1",
                 "*/*", "application/cloudevents+json", "garbage;;;==", "text/html; charset=\"utf-16\""]


class Gen:
    def __init__(self, seed: int) -> None:
        self.r = random.Random(seed)
        self.aqua = (FIXTURES / "postee" / "aqua-input.json").read_bytes()
        self.falco = (FIXTURES / "falco" / "event-single.json").read_bytes()
        self.aqua_paths = [p for p in _leaves(json.loads(self.aqua)) if p]
        self.bomb = gzip.compress(b'{"fuzz":"other","p":"' + b"0" * (BODY_LIMIT * 50) + b'"}')

    # JSON text pieces
    def string(self) -> str:
        r = self.r
        s = r.choice(STRINGS)
        if r.random() < 0.1:
            s = s * r.randint(2, 50)
        if r.random() < 0.05:
            s = "".join(chr(r.randint(0x20, 0x2FFF)) for _ in range(r.randint(1, 40)))
        return s

    def jstr(self, s: str) -> bytes:
        r = self.r
        if r.random() < 0.3:  # escape everything non-ASCII (surrogate pairs for the astral plane)
            return json.dumps(s, ensure_ascii=True).encode()
        return json.dumps(s, ensure_ascii=False).encode()

    def value(self, depth: int) -> bytes:
        r = self.r
        x = r.random()
        if depth <= 0 or x < 0.6:
            y = r.random()
            if y < 0.35:
                return self.jstr(self.string())
            if y < 0.7:
                return r.choice(NUMBERS).encode()
            if y < 0.8:
                return r.choice([b"true", b"false", b"null"])
            return str(r.randint(-10**6, 10**6)).encode()
        if x < 0.75:
            return self.obj(depth - 1)
        return b"[" + b",".join(self.value(depth - 1) for _ in range(r.randint(0, 4))) + b"]"

    def obj(self, depth: int, extra: list[bytes] | None = None) -> bytes:
        r = self.r
        members = []
        keys = [r.choice(KEYS) if r.random() < 0.8 else self.string() for _ in range(r.randint(0, 5))]
        if keys and r.random() < 0.15:
            keys.append(keys[0])  # a duplicate key
        for k in keys:
            members.append(self.jstr(k) + b":" + self.value(depth))
        members += extra or []
        r.shuffle(members)
        return b"{" + b",".join(members) + b"}"

    def event(self) -> bytes:
        """A valid JSON object (orjson accepts it), sometimes one that delivers."""
        r = self.r
        x = r.random()
        fuzz = r.choices([b'"deliver"', b'"legacy"', b'"tenant"', b'"other"', b"1", b"null"], [2, 2, 2, 10, 1, 1])[0]
        if x < 0.2:
            return self.mutated_aqua(fuzz)
        if x < 0.3:
            body = json.loads(self.falco)
            body[r.choice(list(body))] = json.loads(self.value(2) if r.random() < 0.7 else b"null")
            return json.dumps({**body, "fuzz": json.loads(fuzz)}).encode()
        if x < 0.5:  # the nested path r-nested looks at, with odd types on the way
            c = r.choice([b"1", b"1.0", b'"1"', b"[1]", b"{}", b"null", b"true"])
            return b'{"fuzz":' + fuzz + b',"a":{"b":{"c":' + c + b"}}}"
        return self.obj(r.randint(0, 4), [b'"fuzz":' + fuzz])

    def mutated_aqua(self, fuzz: bytes) -> bytes:
        r = self.r
        event = json.loads(self.aqua)
        for _ in range(r.randint(1, 6)):
            path = r.choice(self.aqua_paths)
            parent = event
            try:
                for part in path[:-1]:
                    parent = parent[part]
                if r.random() < 0.2 and isinstance(parent, dict):
                    parent.pop(path[-1], None)
                else:
                    parent[path[-1]] = json.loads(self.value(2))
            except (KeyError, IndexError, TypeError):
                continue
        event["fuzz"] = json.loads(fuzz)
        return json.dumps(event, ensure_ascii=r.random() < 0.5).encode()

    def invalid(self) -> bytes:
        r = self.r
        base = self.event()
        x = r.random()
        if x < 0.2:  # truncated
            return base[: r.randint(0, max(0, len(base) - 1))]
        if x < 0.35:  # a number JSON does not have
            return b'{"fuzz":"deliver","n":' + r.choice(BAD_NUMBERS).encode() + b"}"
        if x < 0.55:  # invalid UTF-8 inside a string
            bad = r.choice(BAD_UTF8)
            return b'{"fuzz":"deliver","s":"a' + bad + b'b"}'
        if x < 0.65:
            return b"\xef\xbb\xbf" + base  # a byte order mark
        if x < 0.75:
            return base + r.choice([b"x", b"}", b",", b" {}", b"\x00", b"]"])
        if x < 0.85:
            return r.choice([b"", b" ", b"{", b"}", b"{]", b'{"a"}', b'{"a":}', b"{'a': 1}", b'{"\\ud800": 1}',
                             b'{"s": "\\ud800"}', b'{"s": "\\x41"}', b'{"s": "\t"}', b"nul", b"tru"])
        return r.randbytes(r.randint(1, 64))

    def not_object(self) -> bytes:
        r = self.r
        return r.choice([b"[]", b"[{}]", b"null", b"1", b'"x"', b"true", b"[" + self.event() + b"]", b"1e308"])

    def deep(self) -> bytes:
        """An object nested ``depth`` levels (arrays, objects or both) around the limit."""
        r = self.r
        depth = r.choice([MAX_DEPTH - 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, MAX_DEPTH + 2, 120, 127, 128, 129,
                          200, 1000, r.randint(50, 140)])
        opens, closes = [], []
        for _ in range(depth - 1):
            if r.random() < 0.5:
                opens.append(b"[")
                closes.append(b"]")
            else:
                opens.append(b'{"d":')
                closes.append(b"}")
        inner = b"".join(opens) + r.choice([b"1", b'"x"', b"{}", b"[]"]) + b"".join(reversed(closes))
        fuzz = r.choice([b'"deliver"', b'"other"'])
        if r.random() < 0.2:  # brackets inside strings are not nesting
            return b'{"fuzz":' + fuzz + b',"s":"' + b"[{" * depth + b'","x":' + inner + b"}"
        return b'{"fuzz":' + fuzz + b',"x":' + inner + b"}"

    def big(self) -> bytes:
        r = self.r
        size = r.choice([BODY_LIMIT - 200, BODY_LIMIT - 20, BODY_LIMIT - 1, BODY_LIMIT, BODY_LIMIT + 1, BODY_LIMIT + 100])
        head = b'{"fuzz":"other","pad":"'
        return head + b"x" * max(0, size - len(head) - 2) + b'"}'

    # one request
    def auth(self, req: Req, route: str | None) -> None:
        r = self.r
        x = r.random()
        if route == "t-hmac" or (x < 0.15):  # HMAC: the route's own key or the global one
            key = ROUTE_KEY if route == "t-hmac" else HMAC_KEY
            y = r.random()
            if y < 0.8:
                req.headers[SIG] = "sha256=" + hmac.new(key.encode(), req.body, hashlib.sha256).hexdigest()
            else:
                req.headers[SIG] = r.choice(["", "sha256=", "sha256=zz", "sha1=" + "0" * 40, "sha256=" + "0" * 64,
                                             "sha256=" + hmac.new(b"wrong", req.body, hashlib.sha256).hexdigest(),
                                             "SHA256=" + "a" * 64, "sha256=" + "é" * 3])
                req.kind += "+badsig"
            return
        if x < 0.85:
            req.headers["Authorization"] = f"Bearer {TOKEN}"
            if r.random() < 0.1:
                req.headers["Authorization"] = r.choice([f"bearer {TOKEN}", f"Bearer   {TOKEN}  ", f"BEARER {TOKEN}"])
            return
        req.kind += "+badauth"
        y = r.random()
        if y < 0.2:
            return  # none
        req.headers["Authorization"] = r.choice([
            "Bearer", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", "Bearer \t",
            "Token abc", f"Bearer {TOKEN} {TOKEN}", "Bearer " + "A" * 4000, "Bearer é", "Bearer \t\t"])

    def request(self) -> Req:
        r = self.r
        x = r.random()
        if x < 0.04:
            return self.raw_request()
        kinds = ["event", "invalid", "not_object", "deep", "big", "encoded", "method"]
        kind = r.choices(kinds, [40, 16, 5, 12, 2, 15, 4])[0]
        req = Req(kind)
        if kind == "event":
            req.body = self.event()
        elif kind == "invalid":
            req.body = self.invalid()
        elif kind == "not_object":
            req.body = self.not_object()
        elif kind == "deep":
            req.body = self.deep()
        elif kind == "big":
            req.body = self.big()
        elif kind == "encoded":
            self.encode(req)
        else:
            req.method = r.choice(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE", "FUZZ"])
            req.body = b"" if req.method in ("GET", "HEAD", "TRACE") else self.event()
        route = self.path(req)
        ctype = r.choice(CONTENT_TYPES)
        if ctype:
            req.headers["Content-Type"] = ctype
        if r.random() < 0.05:
            req.headers[r.choice(["User-Agent", "X-Forwarded-For", "X-Herald-Event-Id", "Herald-Authenticated",
                                  "Expect", "Accept-Encoding", "Connection"])] = r.choice(
                ["", "x" * 2000, "127.0.0.1, evil", "bearer", "keep-alive", "gzip", "mtls", "\t x \t"])
        self.auth(req, route)
        return req

    def path(self, req: Req) -> str | None:
        r = self.r
        x = r.random()
        if x < 0.6:
            req.path = "/"
            return None
        if x < 0.7:
            req.path = r.choice(["/scan", "/scan?x=1", "/?a=b&c", "/#frag"])
            return None
        if x < 0.8:
            req.path = "/tenant/t-hmac"
            return "t-hmac"
        if x < 0.85:
            req.path = "/tenant/t-%C3%BC%20x"
            return ODD_ROUTE
        if x < 0.9:
            req.path = "/tenant/r-deliver"
            return "r-deliver"
        req.path = r.choice([
            "/tenant/", "/tenant/nope", "/tenant/%00", "/tenant/..%2f..%2fetc", "/tenant/%ff%fe", "/tenant/a/b",
            "/tenant/t-%c3%bc%20x", "/tenant/" + "a" * 3000, "//", "/scan/", "/tenant/%2e%2e", "/TENANT/r-deliver",
            "/tenant/r-deliver%00", "/tenant/\u00e9", "/readyz", "/healthz", "/ping", "/metrics", "/%", "/a%zz",
            "/tenant/t-hmac;x", "/tenant/t-hmac/..", "/tenant/%20",
        ])
        return "?"

    def encode(self, req: Req) -> None:
        r = self.r
        body = self.event()
        enc = r.choice(["gzip", "gzip-bogus", "gzip-truncated", "deflate", "deflate-bogus", "br", "br-bogus",
                        "identity", "x-unknown", "gzip, gzip", "gzip-bomb", "zstd", "GZIP", "compress"])
        req.kind = f"encoded:{enc}"
        if enc == "gzip" or enc == "GZIP":
            req.body = gzip.compress(body)
        elif enc == "gzip-bogus":
            req.body = b"\x1f\x8b\x08\x00" + body
        elif enc == "gzip-truncated":
            data = gzip.compress(body)
            req.body = data[: r.randint(1, len(data) - 1)]
        elif enc == "deflate":
            req.body = zlib.compress(body)
        elif enc == "deflate-bogus":
            req.body = b"\x78\x9c" + body
        elif enc == "gzip, gzip":
            req.body = gzip.compress(gzip.compress(body))
        elif enc == "gzip-bomb":
            req.body = self.bomb
        else:
            req.body = body if r.random() < 0.5 else r.randbytes(40)
        req.headers["Content-Encoding"] = {"gzip-bogus": "gzip", "gzip-truncated": "gzip", "deflate-bogus": "deflate",
                                           "br-bogus": "br", "gzip-bomb": "gzip"}.get(enc, enc)

    def raw_request(self) -> Req:
        """A request no HTTP client library would send."""
        r = self.r
        body = self.event()
        auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
        kind = r.choice(["short-body", "stall", "bad-chunks", "good-chunks", "garbage-line", "no-colon", "huge-header",
                         "cl-and-te", "bad-cl", "http10", "negative-cl", "many-headers", "bad-version",
                         "ctl-header"])
        head = b"POST / HTTP/1.1\r\nHost: x\r\n" + auth
        if kind == "short-body":
            raw = head + f"Content-Length: {len(body) + 50}\r\n\r\n".encode() + body
        elif kind == "stall":
            raw = head + f"Content-Length: {len(body) + 50}\r\n\r\n".encode() + body[: len(body) // 2]
        elif kind == "bad-chunks":
            raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + r.choice(
                [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabc\r\n0\r\n\r\n", b"-1\r\n\r\n", b"ffffffffffffffff\r\nx\r\n",
                 b"3\r\n{}x\r\n"])
        elif kind == "good-chunks":
            half = len(body) // 2
            raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(
                f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in (body[:half], body[half:]) if part
            ) + b"0\r\n\r\n"
        elif kind == "garbage-line":
            raw = r.choice([b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"GARBAGE\r\n\r\n",
                            b"POST\r\n\r\n", b"POST / HTTP/9.9\r\n\r\n", b"POST /\x00 HTTP/1.1\r\nHost: x\r\n\r\n",
                            b" / HTTP/1.1\r\n\r\n", b"POST /tenant/t-\xc3\xbc x HTTP/1.1\r\nHost: x\r\n\r\n",
                            b"HEAD /tenant/a b HTTP/1.1\r\nHost: x\r\n\r\n"])
        elif kind == "no-colon":
            raw = head + b"Content-Length: 2\r\nthis header has no colon\r\n\r\n{}"
        elif kind == "huge-header":
            raw = head + b"X-Big: " + b"a" * 20000 + b"\r\nContent-Length: 2\r\n\r\n{}"
        elif kind == "cl-and-te":
            raw = head + f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n".encode() + body
        elif kind == "bad-cl":
            raw = head + r.choice([b"Content-Length: abc\r\n\r\n{}", b"Content-Length: 2, 3\r\n\r\n{}",
                                   b"Content-Length: 99999999999999999999\r\n\r\n{}"])
        elif kind == "negative-cl":
            raw = head + b"Content-Length: -1\r\n\r\n{}"
        elif kind == "many-headers":
            raw = head + b"".join(f"X-H{i}: v\r\n".encode() for i in range(200)) + b"Content-Length: 2\r\n\r\n{}"
        elif kind == "ctl-header":  # control characters a client library refuses to send
            raw = (b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                   + r.choice([b"\x01", b"\x7f", b"\x00", b"\x1b[31m"]) + b"\r\nContent-Length: 2\r\n\r\n{}")
        elif kind == "http10":
            raw = (b"POST / HTTP/1.0\r\n" + auth + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        else:
            raw = b"POST / HTTP/1.x\r\n" + auth + b"Content-Length: 2\r\n\r\n{}"
        return Req(f"raw:{kind}", raw=raw, stall=kind == "stall", abort=kind == "short-body")


# -- sending -------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    req: Req
    status: int  # 0: no answer
    body: bytes
    error: str = ""


async def send(session: aiohttp.ClientSession, base: str, req: Req) -> Outcome:
    try:
        async with session.request(req.method, URL(base + req.path, encoded=True), data=req.body or None,
                                   headers=req.headers, skip_auto_headers=("Content-Type",),
                                   allow_redirects=False) as resp:
            return Outcome(req, resp.status, await resp.read())
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(req, 0, b"", f"{type(exc).__name__}: {exc}")


async def send_raw(port: int, req: Req) -> Outcome:
    assert req.raw is not None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
    except (OSError, TimeoutError) as exc:
        return Outcome(req, 0, b"", f"connect: {exc}")
    try:
        writer.write(req.raw)
        await writer.drain()
        if req.abort:  # the client goes away mid-request: there is no answer to read
            writer.transport.abort()
            return Outcome(req, -1, b"")
        data = b""
        deadline = time.monotonic() + READ_TIMEOUT + 15
        while time.monotonic() < deadline:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
            except TimeoutError:
                break
            if not chunk:
                break
            data += chunk
            head, sep, rest = data.partition(b"\r\n\r\n")
            if sep and b"content-length:" in head.lower():
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) >= length:
                    break
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
        return Outcome(req, status, data.partition(b"\r\n\r\n")[2], "" if status else f"answer {data[:100]!r}")
    except (OSError, ValueError, IndexError) as exc:
        return Outcome(req, 0, b"", f"{type(exc).__name__}: {exc}")
    finally:
        writer.close()


async def run_fuzz(base: str, port: int, reqs: list[Req]) -> list[Outcome]:
    queue: asyncio.Queue[Req] = asyncio.Queue()
    for req in reqs:
        queue.put_nowait(req)
    outcomes: list[Outcome] = []
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector,
                                     auto_decompress=False, skip_auto_headers=("User-Agent",)) as session:
        async def worker() -> None:
            while not queue.empty():
                req = queue.get_nowait()
                outcomes.append(await (send_raw(port, req) if req.raw is not None else send(session, base, req)))

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return outcomes


def is_ingest(req: Req) -> bool:
    path = req.path.split("?")[0]
    return req.method == "POST" and (path in ("/", "/scan") or path.startswith("/tenant/"))


def event_ids(outcomes: list[Outcome]) -> list[str]:
    """The event ids of the accepted events: every 2xx answer to an ingest POST carries one."""
    ids = []
    for o in outcomes:
        if 200 <= o.status < 300 and is_ingest(o.req):
            answer = json.loads(o.body)
            assert isinstance(answer.get("event_id"), str) and answer["event_id"], (o.req.kind, o.body[:200])
            ids.append(answer["event_id"])
    return ids


# -- the test ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sink() -> Iterator[Sink]:
    with Sink() as s:
        s.expect("/sink", method="POST", json=True)  # raw-json renders every event as JSON
        s.expect("/legacy", method="POST")
        yield s


def test_fuzz_bridge_and_worker(kafka: Any, sink: Sink, tmp_path: Any) -> None:
    print(f"\nfuzz seed {SEED} (HERALD_FUZZ_SEED), {COUNT} requests (HERALD_FUZZ_COUNT)")
    t0 = time.monotonic()
    gen = Gen(SEED)
    reqs = [gen.request() for _ in range(COUNT)]
    print(f"generated in {time.monotonic() - t0:.1f}s")
    with Herald(kafka, fuzz_config(sink), tmp_path) as herald:
        started = time.monotonic()
        outcomes = asyncio.run(run_fuzz(herald.url, herald.port, reqs))
        sent_s = time.monotonic() - started
        assert len(outcomes) == COUNT

        by_status = Counter(o.status for o in outcomes)
        by_kind: dict[str, Counter[int]] = {}
        for o in outcomes:
            by_kind.setdefault(o.req.kind.split("+")[0], Counter())[o.status] += 1
        print(f"sent in {sent_s:.1f}s; statuses {dict(sorted(by_status.items()))}")
        for kind, statuses in sorted(by_kind.items()):
            print(f"  {kind:28} {dict(sorted(statuses.items()))}")

        # every request answered, and no 5xx but 503
        dropped = [o for o in outcomes if o.status == 0]
        assert not dropped, f"{len(dropped)} request(s) got no answer, e.g. " + "; ".join(
            f"{o.req.kind} {o.req.method} {o.req.path[:80]} {o.req.headers} {len(o.req.body)} bytes: {o.error}"
            for o in dropped[:8])
        server_errors = [o for o in outcomes if o.status >= 500 and o.status != 503]
        assert not server_errors, f"{len(server_errors)} 5xx answer(s), e.g. " + "; ".join(
            f"{o.status} {o.req.kind} {o.req.method} {o.req.path[:80]} {o.req.headers} {o.req.body[:120]!r}: "
            f"{o.body[:200]!r}" for o in server_errors[:5])
        # the generator must reach the worker with a good share of events, else it tests little
        ids = event_ids(outcomes)
        assert len(ids) > COUNT // 4, f"only {len(ids)} of {COUNT} requests were accepted"
        assert len(set(ids)) == len(ids)
        # requests the bridge must refuse are refused: not-objects, invalid JSON, too deep, wrong credentials
        for o in outcomes:
            kind = o.req.kind
            if is_ingest(o.req) and (kind in ("not_object", "invalid") or kind.endswith(("+badauth", "+badsig"))):
                assert not 200 <= o.status < 300, (kind, o.req.headers, o.req.body[:200])
            if kind == "deep" and 200 <= o.status < 300:
                depth = _depth(o.req.body)
                assert depth <= MAX_DEPTH, f"nesting {depth} > {MAX_DEPTH} accepted"
        assert herald.procs["bridge"].poll() is None and herald.procs["worker"].poll() is None
        # rejections are logged one line per kind and second, not one per request
        bridge_lines = herald.log_text("bridge").count("\n")
        assert bridge_lines < COUNT // 10, f"{bridge_lines} bridge log lines for {COUNT} requests"

        # every accepted event is routed (a decision) or dead-lettered with a reason
        pending = set(ids)
        decided: dict[str, dict[str, Any]] = {}
        dead: dict[str, list[dict[str, Any]]] = {}

        def all_accounted() -> bool:
            assert herald.procs["worker"].poll() is None, herald.log_text("worker")[-3000:]
            for d in herald.read_topic("decisions"):
                if d.get("event_id") in pending:
                    decided[d["event_id"]] = d
            dead.clear()
            for d in herald.read_topic("dlq.router"):
                if d.get("event_id") in pending:
                    dead.setdefault(d["event_id"], []).append(d)
            return not (pending - decided.keys() - dead.keys())

        wait_until(all_accounted, 300, f"decisions or dead letters for {len(pending)} accepted events "
                   f"(missing {len(pending - decided.keys() - dead.keys())})", interval=2.0)
        for letters in dead.values():
            for letter in letters:
                assert letter.get("error", "").strip() and letter.get("error_type"), letter
        print(f"{len(ids)} accepted events: {len(decided)} decisions, {len(dead)} dead-lettered by the router "
              f"({Counter(d['error_type'] for ls in dead.values() for d in ls)}); routed and dead-lettered in "
              f"{time.monotonic() - started:.1f}s since the first request")

        # what the router sent to the sink arrives there (raw-json: valid JSON, checked by the sink)
        wanted = Counter(a["action"] for d in decided.values() for a in d.get("actions", []))
        assert wanted["a-sink"] > 0 and wanted["a-legacy"] > 0, wanted
        sink.wait_for("/sink", wanted["a-sink"], timeout=120)
        sink.wait_for("/legacy", wanted["a-legacy"], timeout=120)
        assert herald.procs["bridge"].poll() is None and herald.procs["worker"].poll() is None
        status, _ = herald.get("/readyz")
        assert status == 200
        print(f"sink got {sink.count('/sink')} + {sink.count('/legacy')} deliveries; total "
              f"{time.monotonic() - started:.1f}s")


def _depth(body: bytes) -> int:
    depth = best = 0
    in_string = escaped = False
    for b in body:
        if in_string:
            if escaped:
                escaped = False
            elif b == 0x5C:
                escaped = True
            elif b == 0x22:
                in_string = False
        elif b == 0x22:
            in_string = True
        elif b in b"[{":
            depth += 1
            best = max(best, depth)
        elif b in b"]}":
            depth -= 1
    return best


def test_early_answer_to_an_undecodable_body_closes_the_connection(kafka: Any, sink: Sink, tmp_path: Any) -> None:
    """A 401/403 given before the body is read, on a body aiohttp cannot skip (a bogus gzip,
    broken chunks), says ``Connection: close``: aiohttp's lingering read of that body failed and
    closed the kept-alive connection under the client's next request (found by the fuzz run)."""
    async def go(herald: Herald) -> list[tuple[int, str | None]]:
        answers = []
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            for i in range(20):
                bogus = b"\x1f\x8b\x08\x00" + b"not gzip " * 900
                auth = {"Authorization": f"Bearer {TOKEN}x"} if i % 2 else {}
                async with session.post(herald.url + "/tenant/t-hmac", data=bogus,
                                        headers={"Content-Encoding": "gzip", **auth}) as resp:
                    answers.append((resp.status, resp.headers.get("Connection")))
                async with session.post(herald.url + "/", data=b'{"fuzz": "other"}',
                                        headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
                    answers.append((resp.status, resp.headers.get("Connection")))
        return answers

    with Herald(kafka, fuzz_config(sink), tmp_path, workers=0) as herald:
        answers = asyncio.run(go(herald))
    assert answers[0::2] == [(401, "close"), (403, "close")] * 10
    assert [status for status, _ in answers[1::2]] == [200] * 20
