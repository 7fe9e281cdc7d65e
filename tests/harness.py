"""Test harness: a real local Kafka, Herald processes on it, and HTTP sinks that record requests.

    kafka = LocalKafka(...)             # session fixture ``kafka`` in conftest.py
    with Sink() as sink:                # aiohttp server on 127.0.0.1 in its own thread
        sink.script("/flaky", [500, 500, 200])
        with Herald(kafka, cfg_dict, tmp_path) as herald:   # bridge + worker subprocesses
            herald.post(event_bytes)                        # POST / -> (status, json)
            sink.wait_for("/flaky", 1)

Every Herald instance gets its own topic prefix and consumer group, so tests never see each
other's events on the shared broker.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(os.environ.get("HERALD_FIXTURES", "/work/shared/fixtures"))


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
class Sink:
    """An HTTP server on 127.0.0.1 that records every request and answers from a script per path."""

    port: int = field(default_factory=free_port)
    requests: dict[str, list[Recorded]] = field(default_factory=lambda: defaultdict(list))
    _scripts: dict[str, list[Any]] = field(default_factory=dict)
    _default: dict[str, Any] = field(default_factory=dict)
    _held: dict[str, asyncio.Event] = field(default_factory=dict)
    _hold_next: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, path: str, statuses: list[Any], then: Any = 200) -> None:
        """Answer ``path`` with ``statuses`` in order, then ``then`` forever. A status may be a
        tuple ``(status, headers)``."""
        self._scripts[path] = list(statuses)
        self._default[path] = then

    def hold_next(self, path: str) -> None:
        """Keep the next request on ``path`` unanswered until ``release(path)`` (others are answered)."""
        self._held[path] = asyncio.Event()
        self._hold_next.add(path)

    def release(self, path: str) -> None:
        self._loop.call_soon_threadsafe(self._held.pop(path).set)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.path
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

    def __exit__(self, *exc: object) -> None:
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def count(self, path: str) -> int:
        return len(self.requests.get(path, []))

    def wait_for(self, path: str, n: int, timeout: float = 60.0) -> list[Recorded]:
        wait_until(lambda: self.count(path) >= n, timeout, f"{n} request(s) on {path} (got {self.count(path)})")
        return self.requests[path]


class Herald:
    """Herald bridge and worker as subprocesses of this test, on the session broker."""

    def __init__(self, kafka: Any, cfg: dict[str, Any], workdir: Path, bridge: bool = True, workers: int = 1,
                 env: dict[str, str] | None = None) -> None:
        self.kafka = kafka
        self.workdir = workdir
        self.prefix = f"t{uuid.uuid4().hex[:8]}."
        self.port = free_port()
        cfg = dict(cfg)
        herald = dict(cfg.get("herald") or {})
        herald.setdefault("topic-prefix", self.prefix)
        herald.setdefault("consumer-group", f"herald-{self.prefix.rstrip('.')}")
        herald.setdefault("partitions", 3)
        herald["kafka-bootstrap-servers"] = kafka.bootstrap
        herald["http-listen"] = f"127.0.0.1:{self.port}"
        cfg["herald"] = herald
        self.prefix = herald["topic-prefix"]
        self.cfg_path = workdir / f"cfg-{self.prefix.rstrip('.')}.yaml"
        self.cfg_path.write_text(yaml.safe_dump(cfg))
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for key in ("KAFKA_BOOTSTRAP_SERVERS", "POSTEE_HTTP", "HERALD_TOPIC_PREFIX", "POSTEE_CFG"):
            self.env.pop(key, None)
        self.want_bridge = bridge
        self.n_workers = workers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

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
            status, _ = self.get("/readyz")
            return status == 200

        wait_until(ready, 60, "the bridge to be ready")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        proc = self.procs.get(name)
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else None
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(10)

    def __enter__(self) -> Herald:
        try:
            for i in range(self.n_workers):
                self.start_worker("worker" if i == 0 else f"worker{i}", wait=False)
            if self.want_bridge:
                self.start_bridge()
            for i in range(self.n_workers):
                self.wait_worker_ready("worker" if i == 0 else f"worker{i}")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for name in list(self.procs):
            self.stop(name)

    # -- HTTP ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(self.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json"})
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

    def post(self, body: bytes | dict[str, Any], path: str = "/") -> tuple[int, Any]:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return self._request("POST", path, data)

    # -- topics -------------------------------------------------------------------------------
    def read_topic(self, suffix: str, min_count: int = 0, timeout: float = 30.0) -> list[dict[str, Any]]:
        """All JSON records on ``<prefix><suffix>`` (waits until at least ``min_count``)."""
        return [json.loads(value) for _, _, value in self.read_positions(suffix, min_count, timeout)]

    def read_positions(self, suffix: str, min_count: int = 0,
                       timeout: float = 30.0) -> list[tuple[int, int, bytes]]:
        """(partition, offset, value) of every record on ``<prefix><suffix>``."""
        from app.kafkawindow import WindowReader

        deadline = time.time() + timeout
        while True:
            records = [(r.partition, r.offset, r.value)
                       for r in WindowReader(self.kafka.bootstrap, self.prefix + suffix, None, None)]
            if len(records) >= min_count or time.time() > deadline:
                return records
            time.sleep(0.5)

    def committed(self, suffix: str, partitions: int) -> list[int]:
        """The consumer group's committed offset of each partition of ``<prefix><suffix>`` (-1: none)."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.kafka.bootstrap,
                             "group.id": f"herald-{self.prefix.rstrip('.')}", "enable.auto.commit": False})
        try:
            tps = consumer.committed([TopicPartition(self.prefix + suffix, p) for p in range(partitions)], timeout=10)
            return [int(tp.offset) if tp.offset >= 0 else -1 for tp in tps]
        finally:
            consumer.close()
