"""The webhook bridge: Postee-compatible HTTP endpoints in front of the events topic.

``POST /``, ``/scan`` and ``/tenant/{route}`` answer only after Kafka acknowledged the write
(``acks=all``): 200 with the event id; 400 for a body that is not a JSON object; 413 over the
size limit; 503 when Kafka cannot take the event, so the sender retries. The raw body is the
Kafka value, metadata goes in headers, so producers can publish scanner JSON directly too.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import ssl
import threading
import time
from typing import Any

import orjson
from aiohttp import web
from confluent_kafka import KafkaException, Producer

from app.config import Config
from app.errors import ConfigError, KafkaUnavailableError
from app.kafka_admin import ensure_topics
from app.kafka_client import bootstrap_of, client_config, producer_config
from app.router import H_EVENT_ID, H_RECEIVED_AT, H_ROUTE, H_SOURCE, H_USER_AGENT, new_event_id
from app.topics import Topics

log = logging.getLogger("herald.bridge")

PRODUCE_TIMEOUT_S = 10.0


class _Throttle(logging.Filter):
    """librdkafka repeats the same connection error many times a second while Kafka is down."""

    def __init__(self, every: float = 30.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = record.getMessage().split("]: ", 1)[-1][:80]
        now = time.monotonic()
        if now - self.last.get(key, 0.0) < self.every:
            return False
        self.last[key] = now
        return True


_rdkafka_log = logging.getLogger("herald.kafka.client")
_rdkafka_log.addFilter(_Throttle())


def _json_error(status: int, reason: str, **extra: Any) -> web.Response:
    return web.json_response({"error": reason, **extra}, status=status)


class KafkaWriter:
    """An idempotent ``acks=all`` producer whose delivery reports resolve asyncio futures."""

    def __init__(self, kafka: dict[str, Any] | str, topic: str, partitions: int = 6, replication: int = 1) -> None:
        """``kafka``: the client config (``app.kafka_client.client_config(settings)``)."""
        self.topic = topic
        self._topic_spec = (partitions, replication)
        self.kafka = kafka
        self.bootstrap = bootstrap_of(kafka)
        self.producer = Producer(
            producer_config(  # acks=all, idempotent, murmur2: the same partitions as the worker and Java clients
                kafka,
                **{
                    "linger.ms": 2,
                    "compression.type": "lz4",
                    "message.timeout.ms": int(PRODUCE_TIMEOUT_S * 1000),
                    "socket.connection.setup.timeout.ms": 3000,
                    "reconnect.backoff.ms": 200,
                    "reconnect.backoff.max.ms": 2000,
                    "logger": _rdkafka_log,
                    "message.max.bytes": 16 * 1024 * 1024,
                },
            )
        )
        self.ready = False
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._checker = threading.Thread(target=self._check, name="kafka-ready", daemon=True)

    def start(self) -> None:
        self._poller.start()
        self._checker.start()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)

    def _check(self) -> None:
        """Readiness: the events topic's metadata is reachable (checked every second)."""
        while not self._stop.is_set():
            try:
                md = self.producer.list_topics(self.topic, timeout=2)
                topic = md.topics.get(self.topic)
                self.ready = topic is not None and topic.error is None and bool(md.brokers)
                if not self.ready and md.brokers:
                    ensure_topics(self.kafka, [self.topic], *self._topic_spec)
            except (KafkaException, KafkaUnavailableError):
                self.ready = False
            self._stop.wait(1.0)

    async def write(self, value: bytes, headers: list[tuple[str, bytes]], key: bytes) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_set_exc, fut, KafkaException(err))
            else:
                loop.call_soon_threadsafe(_set_result, fut, (msg.partition(), msg.offset()))

        try:
            self.producer.produce(self.topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        except BufferError:
            raise KafkaException("local produce queue is full") from None
        return await asyncio.wait_for(fut, PRODUCE_TIMEOUT_S + 2)

    def close(self) -> None:
        self._stop.set()
        self.producer.flush(5)


def _set_result(fut: asyncio.Future[Any], value: Any) -> None:
    if not fut.done():
        fut.set_result(value)


def _set_exc(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


class Bridge:
    def __init__(self, config: Config, writer: KafkaWriter | None = None) -> None:
        self.config = config
        self.topics = Topics(config.herald.topic_prefix)
        settings = config.herald
        self.writer = writer or KafkaWriter(
            client_config(settings), self.topics.events, settings.partitions, settings.replication_factor
        )
        self.body_limit = config.herald.body_limit
        self.accepted = 0

    def app(self) -> web.Application:
        # client_max_size slightly above the limit so we answer 413 ourselves with a clear body
        app = web.Application(client_max_size=self.body_limit + 1)
        app.router.add_post("/", self.ingest)
        app.router.add_post("/scan", self.ingest)
        app.router.add_post("/tenant/{route}", self.ingest)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        self.writer.start()

    async def _on_cleanup(self, app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.writer.close)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response("Postee alive!")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        if self.writer.ready:
            return web.json_response({"status": "ready", "kafka": self.writer.bootstrap})
        return _json_error(503, f"Kafka at {self.writer.bootstrap} is not reachable")

    async def ingest(self, request: web.Request) -> web.Response:
        route = request.match_info.get("route")
        if route is not None and route not in self.config.routes:
            return _json_error(404, f"unknown route {route!r}", routes=sorted(self.config.routes))
        if request.content_length is not None and request.content_length > self.body_limit:
            return _json_error(413, f"body of {request.content_length} bytes exceeds the limit of {self.body_limit} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _json_error(413, f"body exceeds the limit of {self.body_limit} bytes")
        if len(body) > self.body_limit:
            return _json_error(413, f"body of {len(body)} bytes exceeds the limit of {self.body_limit} bytes")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _json_error(400, f"body is not valid JSON: {exc}")
        if not isinstance(parsed, dict):
            return _json_error(400, f"body must be a JSON object, got {type(parsed).__name__}")
        if not self.writer.ready:
            return _json_error(503, "Kafka is not reachable; retry later", retry_after=1)
        event_id = new_event_id()
        headers = [
            (H_EVENT_ID, event_id.encode()),
            (H_RECEIVED_AT, str(int(time.time() * 1000)).encode()),
            (H_SOURCE, (request.remote or "").encode()),
            (H_USER_AGENT, request.headers.get("User-Agent", "").encode()),
        ]
        if route is not None:
            headers.append((H_ROUTE, route.encode()))
        try:
            partition, offset = await self.writer.write(body, headers, event_id.encode())
        except (TimeoutError, KafkaException) as exc:
            log.warning("event not accepted, Kafka did not acknowledge it: %s", exc)
            return web.json_response(
                {"error": "Kafka did not acknowledge the event; retry later"}, status=503, headers={"Retry-After": "1"}
            )
        self.accepted += 1
        return web.json_response({"event_id": event_id, "partition": partition, "offset": offset})


def _split(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"expected host:port, got {address!r}", what, address)
    return host or "0.0.0.0", int(port)


def tls_context(environ: dict[str, str] | None = None) -> ssl.SSLContext:
    """HTTPS with Postee's variables ``AQUAALERT_CERT_PEM`` and ``AQUAALERT_KEY_PEM`` (no self-signed
    certificate is written next to the binary, unlike Postee)."""
    env = os.environ if environ is None else environ
    cert, key = env.get("AQUAALERT_CERT_PEM", ""), env.get("AQUAALERT_KEY_PEM", "")
    if not cert or not key:
        raise ConfigError("HTTPS needs AQUAALERT_CERT_PEM and AQUAALERT_KEY_PEM (certificate and key files)",
                          "herald.https-listen")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load the TLS certificate {cert} / key {key}: {exc}", "herald.https-listen") from None
    return ctx


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve HTTP (and HTTPS when ``https-listen`` is set) until ``stop`` is set or cancelled."""
    bridge = Bridge(config)
    runner = web.AppRunner(bridge.app(), access_log=None)
    await runner.setup()
    host, port = _split(config.herald.http_listen, "herald.http-listen")
    sites = [web.TCPSite(runner, host, port)]
    if config.herald.https_listen:
        thost, tport = _split(config.herald.https_listen, "herald.https-listen")
        sites.append(web.TCPSite(runner, thost, tport, ssl_context=tls_context()))
    try:
        for site in sites:
            await site.start()
            log.info("bridge listening on %s (events topic %s)", site.name, bridge.topics.events)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def run_bridge(config: Config) -> None:
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(serve(config, stop))
    finally:
        loop.close()
