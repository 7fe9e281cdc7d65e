"""Test harness: a real local Kafka, Herald processes on it, and HTTP sinks that record requests.

    kafka = LocalKafka(...)             # session fixture ``kafka`` in conftest.py
    with Sink() as sink:                # aiohttp server on 127.0.0.1 in its own thread
        sink.script("/flaky", [500, 500, 200])
        with Herald(kafka, cfg_dict, tmp_path) as herald:   # bridge + worker subprocesses
            herald.post(event_bytes)                        # POST / -> (status, json)
            sink.wait_for("/flaky", 1)

Every Herald instance gets its own topic prefix and consumer group, so tests never see each
other's events on the shared broker.

What fails a test besides its own asserts:

- ``Herald.__exit__``: a process that exited non-zero on its own, or did not exit 0 on SIGTERM
  (processes the test SIGKILLed are exempt), and any ``Traceback (most recent call last)`` in a
  process log the test did not declare with ``expect_traceback(text)``;
- ``Sink.__exit__``: a request no expectation (``sink.expect``, ``sink.script``) allowed;
- ``read_topic(suffix, min_count=n)`` / ``wait_record(...)`` that time out.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web

from app.devtools.kafka_local import LocalKafka

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("HERALD_FIXTURES", str(ROOT / "tests" / "fixtures")))
TRACEBACK = "Traceback (most recent call last)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Expectation:
    """What a test expects on one path of a ``Sink``: ``None`` accepts anything."""

    method: str | None = "POST"
    content_type: str | None = None  # media type, parameters (charset) ignored
    json: bool = False  # the body must parse as JSON
    headers: dict[str, str] = field(default_factory=dict)  # exact values

    def problem(self, method: str, headers: Any, body: bytes) -> tuple[int, str] | None:
        """(4xx status, reason) of a request that does not match, else None."""
        if self.method is not None and method != self.method.upper():
            return 405, f"method {method}, expected {self.method.upper()}"
        media = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.content_type is not None and media != self.content_type.lower():
            return 415, f"Content-Type {headers.get('Content-Type')!r}, expected {self.content_type}"
        for name, value in self.headers.items():
            if headers.get(name) != value:
                return 400, f"header {name}: {headers.get(name)!r}, expected {value!r}"
        if self.json:
            try:
                json.loads(body)
            except ValueError as exc:
                return 400, f"body is not JSON ({exc}): {body[:200]!r}"
        return None


@dataclass
class Unexpected:
    method: str
    path: str
    reason: str
    headers: dict[str, str]
    body: bytes

    def __str__(self) -> str:
        return f"{self.method} {self.path}: {self.reason} (body {self.body[:200]!r})"


@dataclass
class Sink:
    """An HTTP server on 127.0.0.1 that records every request and answers from a script per path.

    Without expectations it accepts anything. Once a path is declared (``expect`` or ``script``),
    every request must match one: a request to an undeclared path, with another method or
    Content-Type, or a body that is not JSON where JSON is expected, gets a 4xx answer, goes to
    ``unexpected`` (not to ``requests``), and fails the test at ``__exit__``."""

    port: int = field(default_factory=free_port)
    requests: dict[str, list[Recorded]] = field(default_factory=lambda: defaultdict(list))
    unexpected: list[Unexpected] = field(default_factory=list)
    expectations: dict[str, Expectation] = field(default_factory=dict)
    _scripts: dict[str, list[Any]] = field(default_factory=dict)
    _default: dict[str, Any] = field(default_factory=dict)
    _held: dict[str, asyncio.Event] = field(default_factory=dict)
    _hold_next: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def expect(self, path: str, method: str | None = "POST", content_type: str | None = None,
               json: bool = False, headers: dict[str, str] | None = None) -> None:
        """Requests on ``path`` must use ``method``, have ``content_type`` (media type) and the
        ``headers`` given, and with ``json=True`` a JSON body. ``None`` accepts any."""
        self.expectations[path] = Expectation(method, content_type, json, dict(headers or {}))

    def script(self, path: str, statuses: list[Any], then: Any = 200, method: str = "POST") -> None:
        """Answer ``path`` with ``statuses`` in order, then ``then`` forever. A status may be a
        tuple ``(status, headers)``. Declares ``expect(path, method)`` unless ``path`` has an
        expectation already."""
        self._scripts[path] = list(statuses)
        self._default[path] = then
        self.expectations.setdefault(path, Expectation(method))

    def switch(self, path: str, then: Any) -> int:
        """Answer ``path`` with ``then`` from now on (``script(path, [], then)``), switched on the
        sink's loop between two requests. Returns how many requests on ``path`` were recorded
        before the switch: exactly the ones answered the old way (a request is recorded and answered
        with no await in between, unless ``hold_next`` holds it)."""
        done: concurrent.futures.Future[int] = concurrent.futures.Future()

        def apply() -> None:
            self.script(path, [], then)
            done.set_result(self.count(path))

        self._loop.call_soon_threadsafe(apply)
        return done.result(10)

    def hold_next(self, path: str) -> None:
        """Keep the next request on ``path`` unanswered until ``release(path)`` (others are answered)."""
        self._held[path] = asyncio.Event()
        self._hold_next.add(path)

    def release(self, path: str) -> None:
        self._loop.call_soon_threadsafe(self._held.pop(path).set)

    def _problem(self, method: str, path: str, headers: Any, body: bytes) -> tuple[int, str] | None:
        if not self.expectations:
            return None
        expectation = self.expectations.get(path)
        if expectation is None:
            return 404, f"no expectation for {path} (expected paths: {sorted(self.expectations)})"
        return expectation.problem(method, headers, body)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
        problem = self._problem(request.method, path, request.headers, body)
        if problem is not None:
            status, reason = problem
            self.unexpected.append(Unexpected(request.method, path, reason, dict(request.headers), body))
            return web.Response(status=status, text=f"sink: unexpected request: {reason}")
        self.requests[path].append(Recorded(request.method, path, dict(request.headers), body, time.time()))
        if path in self._hold_next:
            self._hold_next.discard(path)
            await self._held[path].wait()
        queue = self._scripts.get(path)
        answer = queue.pop(0) if queue else self._default.get(path, 200)
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return web.Response(status=status, text="ok" if status < 400 else f"sink error {status}", headers=headers)

    def __enter__(self) -> Sink:
        started = threading.Event()

        def serve() -> None:
            self._loop = asyncio.new_event_loop()
            app = web.Application(client_max_size=64 * 1024 * 1024)
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        assert started.wait(10), "sink did not start"
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        if self.unexpected:
            report = f"the sink got {len(self.unexpected)} unexpected request(s):\n" + "\n".join(
                f"  {u}" for u in self.unexpected[:20])
            _fail_unless_failing(report, exc)

    def count(self, path: str) -> int:
        return len(self.requests.get(path, []))

    def wait_for(self, path: str, n: int, timeout: float = 60.0) -> list[Recorded]:
        def enough() -> bool:
            if self.unexpected:
                raise AssertionError(f"unexpected request(s) while waiting for {path}: "
                                     + "; ".join(str(u) for u in self.unexpected[:5]))
            return self.count(path) >= n

        wait_until(enough, timeout, f"{n} request(s) on {path} (got {self.count(path)})")
        return self.requests[path]


def _fail_unless_failing(report: str, exc: BaseException | None) -> None:
    """Raise ``report`` as the test's failure, or, while ``exc`` already propagates, add it to
    that exception as a note (raising would hide the original failure)."""
    if exc is None:
        raise AssertionError(report)
    exc.add_note(report)


def traceback_groups(text: str) -> list[str]:
    """Each traceback in a log, with the log line before it and chained tracebacks ("During
    handling of the above exception ...") in the same group, up to its exception line."""
    lines = text.splitlines()
    groups: list[str] = []
    i = 0
    while i < len(lines):
        if TRACEBACK not in lines[i]:
            i += 1
            continue
        start = max(0, i - 1)
        while True:  # one traceback: header, indented frames, then the exception line
            i += 1
            while i < len(lines) and (lines[i].startswith((" ", "\t")) or not lines[i].strip()):
                i += 1
            i += 1  # the exception line
            j = i
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and lines[j].startswith(("During handling of the above", "The above exception")):
                i = j + 1
                while i < len(lines) and TRACEBACK not in lines[i]:
                    i += 1
                if i < len(lines):
                    continue
            break
        groups.append("\n".join(lines[start:i]))
    return groups


class Herald:
    """Herald bridge and worker as subprocesses of this test, on the session broker."""

    def __init__(self, kafka: Any, cfg: dict[str, Any], workdir: Path, bridge: bool = True, workers: int = 1,
                 env: dict[str, str] | None = None, expect_tracebacks: tuple[str, ...] = (),
                 token: str = "") -> None:
        """``token``: a bearer token added to ``herald.auth.bearer-tokens`` and sent with every
        ``post``, so routes with system-changing actions fire (the guard in app/routing/router.py)."""
        self.kafka = kafka
        self.token = token
        self.expected_tracebacks: list[str] = list(expect_tracebacks)
        self.workdir = workdir
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.port = free_port()
        cfg = dict(cfg)
        herald = dict(cfg.get("herald") or {})
        herald.setdefault("topic-prefix", self.prefix)
        herald.setdefault("consumer-group", f"herald-{self.prefix.rstrip('.')}")
        herald.setdefault("partitions", 3)
        herald["kafka-bootstrap-servers"] = kafka.bootstrap
        if getattr(kafka, "client_settings", None) and kafka.client_settings():  # a secured broker
            herald.setdefault("kafka", kafka.client_settings())
        herald["http-listen"] = f"127.0.0.1:{self.port}"
        # each bridge its own spool directory (one bridge per directory), kept across its restarts
        spool = dict(herald.get("spool") or {})
        spool.setdefault("dir", str(workdir / f"spool-{herald['topic-prefix'].rstrip('.')}"))
        herald["spool"] = spool
        if token:
            auth = dict(herald.get("auth") or {})
            auth["bearer-tokens"] = [*auth.get("bearer-tokens", []), token]
            herald["auth"] = auth
        cfg["herald"] = herald
        self.prefix = herald["topic-prefix"]
        self.cfg_path = workdir / f"cfg-{self.prefix.rstrip('.')}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for key in ("KAFKA_BOOTSTRAP_SERVERS", "POSTEE_HTTP", "HERALD_TOPIC_PREFIX", "POSTEE_CFG"):
            self.env.pop(key, None)
        # every worker's admin listener on a free port of its own (several workers share one config)
        self.env.setdefault("HERALD_ADMIN_LISTEN", "127.0.0.1:0")
        self.want_bridge = bridge
        self.n_workers = workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        # every process started, by name (a restarted worker keeps its name), and how the test
        # stopped it: the signal sent, or None while it is running or when it exited on its own
        self.spawned: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.stopped_with: dict[subprocess.Popen[bytes], int] = {}
        self.stop_problems: list[str] = []

    def expect_traceback(self, text: str) -> None:
        """Tracebacks in the process logs that contain ``text`` do not fail the test."""
        self.expected_tracebacks.append(text)

    # -- processes ----------------------------------------------------------------------------
    def _spawn(self, name: str, command: str) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{self.prefix.rstrip('.')}-{name}.log"
        self.logs[name] = log
        with open(log, "ab") as out:  # the child keeps its own descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", command, "--config", str(self.cfg_path)],
                cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self.procs[name] = proc
        self.spawned.append((name, proc))
        return proc

    def log_text(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def start_worker(self, name: str = "worker", wait: bool = True) -> None:
        before = self.log_text(name).count("herald worker ready")
        self._spawn(name, "worker")
        if wait:
            self.wait_worker_ready(name, before)

    def wait_worker_ready(self, name: str = "worker", before: int = 0, timeout: float = 90.0) -> None:
        def ready() -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}:\n{self.log_text(name)[-4000:]}")
            return self.log_text(name).count("herald worker ready") > before

        wait_until(ready, timeout, f"{name} to get partitions")

    def start_bridge(self) -> None:
        self._spawn("bridge", "bridge")

        def ready() -> bool:
            proc = self.procs["bridge"]
            if proc.poll() is not None:
                raise AssertionError(f"bridge exited with {proc.returncode}:\n{self.log_text('bridge')[-4000:]}")
            status, body = self.get("/readyz")
            # with a spool the bridge is ready before Kafka is: wait for Kafka, so that posts get 200
            return status == 200 and not (isinstance(body, dict) and body.get("kafka") == "unreachable")

        wait_until(ready, 60, "the bridge to be ready")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        """Send ``sig`` and wait for the exit code. After SIGTERM the process must exit 0 within
        ``timeout`` (else it is killed and the test fails at ``__exit__``); a process that had
        already exited is checked as one that died on its own."""
        proc = self.procs.get(name)
        if proc is None:
            return None
        return self._stop(name, proc, sig, timeout)

    def _stop(self, name: str, proc: subprocess.Popen[bytes], sig: int, timeout: float) -> int | None:
        if proc.poll() is not None:
            return proc.returncode
        self.stopped_with[proc] = sig
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop_problems.append(f"{name} (pid {proc.pid}) did not exit within {timeout:.0f}s of "
                                      f"signal {signal.Signals(sig).name}; killed")
            proc.kill()
            return proc.wait(10)

    def problems(self) -> list[str]:
        """Exit codes and unexpected tracebacks of every process so far, as failure reports."""
        out = list(self.stop_problems)
        for name, proc in self.spawned:
            code = proc.poll()
            sig = self.stopped_with.get(proc)
            if code is None or sig == signal.SIGKILL or code == 0:
                continue
            how = (f"exited with {code} after {signal.Signals(sig).name}" if sig is not None
                   else f"exited on its own with {code}")
            out.append(f"{name} (pid {proc.pid}) {how}; log tail:\n{self.log_text(name)[-3000:]}")
        for name in dict.fromkeys(n for n, _ in self.spawned):
            text = self.log_text(name)
            if TRACEBACK not in text:
                continue
            groups = [g for g in traceback_groups(text) if not any(e in g for e in self.expected_tracebacks)]
            if groups:
                shown = "\n----\n".join(g[-2500:] for g in groups[:3])
                out.append(f"{len(groups)} unexpected traceback(s) in the {name} log {self.logs[name]} "
                           f"(declare expected ones with expect_traceback(text)):\n{shown}\n"
                           f"log tail:\n{text[-2000:]}")
        return out

    def __enter__(self) -> Herald:
        try:
            for i in range(self.n_workers):
                self.start_worker("worker" if i == 0 else f"worker{i}", wait=False)
            if self.want_bridge:
                self.start_bridge()
            for i in range(self.n_workers):
                self.wait_worker_ready("worker" if i == 0 else f"worker{i}")
        except BaseException as exc:
            self.__exit__(type(exc), exc, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        for name, proc in self.spawned:  # also a process the test replaced without stopping it
            self._stop(name, proc, signal.SIGTERM, 30.0)
        problems = self.problems()
        if problems:
            _fail_unless_failing(f"Herald processes ({self.prefix}) failed:\n\n" + "\n\n".join(problems), exc)

    def admin_url(self, name: str = "worker", timeout: float = 30.0) -> str:
        """``http://host:port`` of the admin listener of worker ``name`` (from its start log line)."""
        marker = "admin listening on http://"

        def found() -> str | None:
            lines = [ln for ln in self.log_text(name).splitlines() if marker in ln]
            return "http://" + lines[-1].split(marker, 1)[1].split()[0] if lines else None

        return str(wait_until(found, timeout, f"the admin listener of {name}"))

    # -- HTTP ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json"}
        if self.token and method == "POST":
            sent["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url + path, data=body, method=method, headers={**sent, **(headers or {})})
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                return resp.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            try:
                return exc.code, json.loads(raw)
            except ValueError:
                return exc.code, raw.decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            return 0, str(exc)

    def get(self, path: str) -> tuple[int, Any]:
        return self._request("GET", path)

    def post(self, body: bytes | dict[str, Any], path: str = "/",
             headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """POST to the bridge (with the bearer ``token``, if any; ``headers`` add or replace)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return self._request("POST", path, data, headers)

    # -- topics -------------------------------------------------------------------------------
    def read_topic(self, suffix: str, min_count: int = 0, timeout: float = 30.0) -> list[dict[str, Any]]:
        """All JSON records on ``<prefix><suffix>``: read once (``min_count=0``), or read until
        there are at least ``min_count``; AssertionError after ``timeout`` seconds."""
        return [json.loads(value) for _, _, value in self.read_positions(suffix, min_count, timeout)]

    def read_positions(self, suffix: str, min_count: int = 0,
                       timeout: float = 30.0) -> list[tuple[int, int, bytes]]:
        """(partition, offset, value) of every record on ``<prefix><suffix>``, as ``read_topic``."""
        from app.errors import KafkaUnavailableError
        from app.kafka.window import WindowReader

        topic = self.prefix + suffix
        deadline = time.time() + timeout
        while True:
            try:
                reader = WindowReader(self.kafka.client_config(), topic, None, None)
                records = [(r.partition, r.offset, r.value) for r in reader]
            except KafkaUnavailableError:  # e.g. a topic just created has no leader yet: read again
                records = []
                if time.time() > deadline:
                    raise
            if len(records) >= min_count:
                return records
            if time.time() > deadline:
                raise AssertionError(f"{topic}: wanted at least {min_count} record(s) within {timeout:.0f}s, "
                                     f"got {len(records)}")
            time.sleep(0.5)

    def wait_record(self, suffix: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 30.0,
                    what: str = "a matching record", count: int = 1) -> list[dict[str, Any]]:
        """The records on ``<prefix><suffix>`` for which ``predicate`` holds, once there are at
        least ``count``; AssertionError naming ``what`` after ``timeout`` seconds."""
        topic = self.prefix + suffix
        deadline = time.time() + timeout
        while True:
            records = self.read_topic(suffix)
            matching = [r for r in records if predicate(r)]
            if len(matching) >= count:
                return matching
            if time.time() > deadline:
                raise AssertionError(f"{topic}: timed out after {timeout:.0f}s waiting for {count} x {what}; "
                                     f"{len(matching)} matching among {len(records)} record(s)")
            time.sleep(0.5)

    def wait_decision(self, event_id: str, timeout: float = 30.0) -> dict[str, Any]:
        """The router's decision record of ``event_id`` (routes matched and why, actions sent)."""
        return self.wait_record("decisions", lambda d: d.get("event_id") == event_id and "routes" in d,
                                timeout, f"the decision on event {event_id}")[0]

    def wait_deliveries(self, event_id: str, action: str, count: int = 1, outcome: str | None = "delivered",
                        timeout: float = 30.0) -> list[dict[str, Any]]:
        """Delivery attempt records of ``event_id`` by ``action`` (with ``outcome`` unless None)."""
        def mine(d: dict[str, Any]) -> bool:
            return d.get("event_id") == event_id and d.get("action") == action and (
                outcome is None or d.get("outcome") == outcome)

        return self.wait_record("deliveries", mine, timeout,
                                f"{outcome or 'any'} deliveries of event {event_id} by {action}", count)

    def committed(self, suffix: str, partitions: int) -> list[int]:
        """The consumer group's committed offset of each partition of ``<prefix><suffix>`` (-1: none)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({**self.kafka.client_config(),
                             "group.id": f"herald-{self.prefix.rstrip('.')}", "enable.auto.commit": False})
        try:
            tps = consumer.committed([TopicPartition(self.prefix + suffix, p) for p in range(partitions)], timeout=10)
            return [int(tp.offset) if tp.offset >= 0 else -1 for tp in tps]
        finally:
            consumer.close()


# -- brokers and certificates of a test's own ------------------------------------------------

def private_broker(what: str, secured: bool = False) -> Iterator[LocalKafka]:
    """A started broker on free ports of a temporary state directory, stopped (and its state removed
    unless HERALD_KEEP_TEST_STATE) at the end: ``yield from private_broker(...)`` in a fixture. A broker
    that cannot start fails the test with the tail of its log; nothing is skipped."""
    state = Path(tempfile.mkdtemp(prefix=f"herald-test-kafka-{'secured-' if secured else ''}"))
    extra = {"secured": True, "internal_port": free_port()} if secured else {}
    broker = LocalKafka(state, port=free_port(), controller_port=free_port(), **extra)
    try:
        broker.start(timeout=120)
    except Exception as exc:  # noqa: BLE001
        log = (state / "kafka.log").read_text(errors="replace")[-3000:] if (state / "kafka.log").exists() else ""
        pytest.fail(f"the {what} could not start: {exc}\n{log}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
        if not os.environ.get("HERALD_KEEP_TEST_STATE"):
            shutil.rmtree(state, ignore_errors=True)


def make_client_cert(ca_cert_pem: bytes, ca_key_pem: bytes, name: str = "scanner") -> tuple[bytes, bytes]:
    """A TLS client certificate (CN=``name``, clientAuth) and its key, PEM, signed by the CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return (cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()))
