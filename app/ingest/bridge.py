"""The webhook bridge: Postee-compatible HTTP endpoints in front of the events topic.

``POST /``, ``/scan`` and ``/tenant/{route}`` answer 200 with the event id once Kafka acknowledged
the write (``acks=all``); 400 for a body that is not a JSON object; 413 over the size limit. When
Kafka cannot take the event, it goes to the disk spool (``app.ingest.spool``, ``herald.spool``): 202 with
the event id once it is fsync'd; a background task produces the spool to Kafka in order when Kafka
is back (and at start), and while the spool holds events new ones queue behind them. 503 with
Retry-After only when the spool is full or off. The raw body is the Kafka value, metadata goes in
headers, so producers can publish scanner JSON directly too.

Security (issue 13): ``herald.auth`` turns on bearer tokens, HMAC-SHA256 body signatures (global
or per ``/tenant/{route}``) and mTLS on the HTTPS listener; 401 without credentials, 403 with
wrong ones. Hostile input gets a 4xx and one rate-limited log line: bad encodings, JSON nested
deeper than ``max-json-depth``, bodies slower than ``read-timeout``; over ``max-in-flight``
requests at once get 503 with Retry-After; a connection that has not sent its request headers
within ``header-timeout`` is closed (slowloris).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import os
import signal
import ssl
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from pathlib import Path
from typing import Any

import orjson
from aiohttp import ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.typedefs import Handler
from confluent_kafka import KafkaError, KafkaException, Producer

from app.telemetry import logformat, metrics
from app.config.loader import Config
from app.config.reload import ReloadResult
from app.errors import ConfigError, HeraldError, KafkaUnavailableError
from app.kafka.admin import ensure_topics, wait_topics
from app.kafka.client import bootstrap_of, client_config, producer_config
from app.routing.router import (H_AUTHENTICATED, H_EVENT_ID, H_RECEIVED_AT, H_ROUTE, H_SOURCE, H_USER_AGENT,
                        new_event_id)
from app.config.settings import AuthSettings
from app.ingest.spool import Position, Spool, SpoolError, SpoolRecord
from app.kafka.topics import SizeLimits, Topics

log = logging.getLogger("herald.bridge")

PRODUCE_TIMEOUT_S = 10.0
DRAIN_BATCH = 500  # records the drain hands to the producer at once
SPOOL_RETRY_AFTER = "5"

# Kafka errors after which the event can be produced later (Kafka away, slow, or electing a
# leader): the event goes to the spool. Any other error (too large, not authorised) would fail
# again: the event is refused (direct path) or set aside (drain).
_TRANSIENT = {
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
    KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT, KafkaError._QUEUE_FULL, KafkaError._WAIT_COORD,
    KafkaError._UNKNOWN_PARTITION, KafkaError._UNKNOWN_TOPIC, KafkaError._NODE_UPDATE,
    KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND, KafkaError.UNKNOWN_TOPIC_OR_PART,
}


# Errors about the record itself: producing it again fails again, whatever Kafka's state.
_RECORD_ERRORS = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_RECORD,
                  KafkaError.INVALID_MSG, KafkaError._BAD_MSG, KafkaError._INVALID_ARG}


def record_error(exc: BaseException) -> bool:
    """Whether the record itself is at fault (a spooled one is set aside rather than retried)."""
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return isinstance(err, KafkaError) and err.code() in _RECORD_ERRORS


def transient(exc: BaseException) -> bool:
    """Whether producing again later can succeed (``TimeoutError``: no delivery report in time)."""
    if isinstance(exc, TimeoutError):
        return True
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    if not isinstance(err, KafkaError):
        return False
    return err.code() in _TRANSIENT or (err.retriable() and not err.fatal())


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


async def _close_if_body_unread(request: web.Request, response: web.StreamResponse) -> None:
    """An answer given before the body was read (401, 403, 404, 405, 413) keeps the connection
    only when the body is plain: aiohttp skips an unread body by decoding it (Content-Encoding,
    chunking), and a bogus gzip or broken chunks then close the kept-alive connection under the
    client's next request (seen as a dropped connection). Such answers say ``Connection: close``
    (the hook runs after aiohttp wrote the connection header, so it is set here too)."""
    if request.can_read_body and ("Content-Encoding" in request.headers or "Transfer-Encoding" in request.headers):
        response.force_close()
        response.headers["Connection"] = "close"


class _RateLog:
    """One warning line per kind of rejected request per ``every`` seconds (a flood stays quiet)."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def __call__(self, kind: str, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) < self.every:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return
        self.last[kind] = now
        more = self.suppressed.pop(kind, 0)
        log.warning("rejected (%s): " + message + (f" (+{more} more since the last line)" if more else ""),
                    kind, *args)


class _OneLine(logging.Filter):
    """aiohttp logs malformed requests (bad headers, chunking, encodings) with a traceback: make
    them one rate-limited line."""

    def __init__(self, every: float = 1.0) -> None:
        super().__init__()
        self.every = every
        self.last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None or not isinstance(exc, _CLIENT_ERRORS):
            return True  # a bug of ours keeps its traceback
        kind = type(exc).__name__
        now = time.monotonic()
        if now - self.last.get(kind, -1e9) < self.every:
            return False
        self.last[kind] = now
        record.msg = f"{record.getMessage()}: {kind}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        record.args = None
        record.exc_info = None
        record.exc_text = None
        return True


_CLIENT_ERRORS = (web.RequestPayloadError, HttpProcessingError, ClientPayloadError, ConnectionError, ssl.SSLError)
logging.getLogger("aiohttp.server").addFilter(_OneLine())

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = [0] * 256
for _b in b"[{":
    _STEP[_b] = 1
for _b in b"]}":
    _STEP[_b] = -1


def json_depth(body: bytes, limit: int) -> int:
    """The nesting depth of valid JSON text ``body`` (0 for a scalar), exact when it is above
    ``limit``; cheap when the body holds at most ``limit`` brackets."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return min(limit, body.count(b"[") + body.count(b"{"))
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(config: Config) -> str | None:
    """Why the bridge must not start: a non-loopback listener without ``herald.auth``."""
    settings = config.herald
    if settings.auth.configured() or settings.allow_unauthenticated:
        return None
    for key, address in (("http-listen", settings.http_listen), ("https-listen", settings.https_listen)):
        if address and not is_loopback(address.rpartition(":")[0] or "0.0.0.0"):
            return (f"herald.{key} {address} is not a loopback address and herald.auth configures no "
                    "authentication (bearer-tokens, hmac-keys or client-ca); set herald.auth, or "
                    "herald.allow-unauthenticated: true to accept unauthenticated events from the network")
    return None


def exposure_warning(config: Config) -> str | None:
    settings = config.herald
    if settings.auth.configured() or not settings.allow_unauthenticated:
        return None
    exposed = [a for a in (settings.http_listen, settings.https_listen)
               if a and not is_loopback(a.rpartition(":")[0] or "0.0.0.0")]
    if not exposed:
        return None
    return (f"the bridge accepts UNAUTHENTICATED events on {', '.join(exposed)} "
            "(herald.allow-unauthenticated: true); configure herald.auth")


class Authenticator:
    """Bearer tokens and HMAC-SHA256 body signatures (global, or per route), and mTLS peers."""

    def __init__(self, auth: AuthSettings) -> None:
        self.auth = auth
        self.signature_header = auth.signature_header
        self.signature_prefix = auth.signature_prefix

    def credentials(self, route: str | None) -> tuple[list[bytes], list[bytes]]:
        """(tokens, keys) that open ``route``: a route's own entry replaces the global lists."""
        own = self.auth.routes.get(route) if route is not None else None
        src = own if own is not None else self.auth
        return ([t.reveal().encode() for t in src.bearer_tokens], [k.reveal().encode() for k in src.hmac_keys])

    def required(self, route: str | None) -> bool:
        tokens, keys = self.credentials(route)
        return bool(tokens or keys or self.auth.client_ca)

    @staticmethod
    def mtls(request: web.Request) -> bool:
        transport = request.transport
        return bool(transport is not None and transport.get_extra_info("peercert"))

    def bearer(self, request: web.Request, tokens: list[bytes]) -> bool | None:
        """True: a valid token; False: a wrong one; None: no bearer token sent."""
        header = request.headers.get("Authorization")
        if header is None:
            return None
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return False
        given = value.strip().encode()
        ok = False
        for token in tokens:  # every token compared: the time does not tell which one matched
            ok |= hmac.compare_digest(given, token)
        return ok

    def signature(self, request: web.Request, body: bytes, keys: list[bytes]) -> bool | None:
        header = request.headers.get(self.signature_header)
        if header is None:
            return None
        value = header.strip()
        if not value.startswith(self.signature_prefix):
            return False
        given = value[len(self.signature_prefix):].strip().lower().encode()
        ok = False
        for key in keys:
            ok |= hmac.compare_digest(given, hmac.new(key, body, hashlib.sha256).hexdigest().encode())
        return ok


class KafkaWriter:
    """An idempotent ``acks=all`` producer whose delivery reports resolve asyncio futures."""

    def __init__(self, kafka: dict[str, Any] | str, topic: str, partitions: int = 6, replication: int = 1,
                 body_limit: int = 10 * 1024 * 1024) -> None:
        """``kafka``: the client config (``app.kafka.client.client_config(settings)``); ``body_limit``:
        ``herald.body-limit``: the producer and the events topic take ``SizeLimits(body_limit).event``."""
        self.topic = topic
        self._topic_spec = (partitions, replication)
        self.kafka = kafka
        self.bootstrap = bootstrap_of(kafka)
        self.body_limit = body_limit
        self.record_limit = SizeLimits(body_limit).event
        own = kafka.get("message.max.bytes") if isinstance(kafka, dict) else None
        if own is not None and int(own) < self.record_limit:
            raise ConfigError(f"{own} is below the {self.record_limit} bytes an event of herald.body-limit "
                              f"{body_limit} needs on the events topic (body + 64 KiB of headers)",
                              "herald.kafka.properties.message.max.bytes", own)
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
                    "message.max.bytes": max(int(own or 0), self.record_limit),
                },
            )
        )
        self.ready = False
        self._served = False  # the events topic's leaders answered for every partition
        self.purge_on_outage = False  # set when a spool takes what Kafka cannot
        self.problem = ""
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
        """Readiness: the events topic's metadata is reachable (checked every second). When Kafka
        goes away, the records still queued in the producer (never sent, so certainly not written)
        are purged: their requests go to the spool now rather than after the message timeout."""
        while not self._stop.is_set():
            was = self.ready
            try:
                md = self.producer.list_topics(self.topic, timeout=2)
                topic = md.topics.get(self.topic)
                ready = topic is not None and topic.error is None and bool(md.brokers)
                if ready and not self._served:
                    # once per topic: every partition's leader has its log, or the first events
                    # could be reported written and lost (app.kafka.admin.wait_topics)
                    wait_topics(self.kafka, [self.topic], timeout=5.0)
                    self._served = True
                elif topic is None:
                    self._served = False
                self.ready = ready
                if not self.ready and md.brokers:
                    self.ensure_topic()
            except (KafkaException, KafkaUnavailableError):
                self.ready = False
            except ConfigError as exc:  # the events topic was changed under us: say so, take no event
                if self.problem != str(exc):
                    log.error("%s", exc)
                self.problem, self.ready = str(exc), False
            if was and not self.ready and self.purge_on_outage:
                self.producer.purge(in_queue=True, in_flight=False, blocking=False)
            self._stop.wait(1.0)

    def ensure_topic(self, timeout: float = 30.0) -> None:
        """Create the events topic if it is missing (``max.message.bytes`` for the body limit);
        ``ConfigError`` when it exists with a smaller ``max.message.bytes``."""
        ensure_topics(self.kafka, [self.topic], *self._topic_spec, timeout,
                      max_message_bytes={self.topic: self.record_limit}, body_limit=self.body_limit)

    def produce(self, loop: asyncio.AbstractEventLoop, record: SpoolRecord) -> asyncio.Future[tuple[int, int]]:
        """Hand ``record`` to the producer; the future resolves with (partition, offset) from its
        delivery report, or fails with ``KafkaException``."""
        fut: asyncio.Future[tuple[int, int]] = loop.create_future()

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                loop.call_soon_threadsafe(_set_exc, fut, KafkaException(err))
            else:
                loop.call_soon_threadsafe(_set_result, fut, (msg.partition(), msg.offset()))

        try:
            # the stub wants list[tuple[str, str | bytes | None]] (a list is invariant); produce only reads it
            self.producer.produce(record.topic, value=record.value, key=record.key,
                                  headers=record.headers, on_delivery=on_delivery)  # type: ignore[arg-type]
        except BufferError:
            fut.set_exception(KafkaException(KafkaError(KafkaError._QUEUE_FULL, "local produce queue is full")))
        except KafkaException as exc:
            fut.set_exception(exc)
        return fut

    async def write(self, value: bytes, headers: list[tuple[str, bytes]], key: bytes) -> tuple[int, int]:
        record = SpoolRecord(self.topic, key, value, headers)
        with metrics.bridge_kafka_write_seconds.time():
            return await asyncio.wait_for(self.produce(asyncio.get_running_loop(), record), PRODUCE_TIMEOUT_S + 2)

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
            client_config(settings), self.topics.events, settings.partitions, settings.replication_factor,
            settings.body_limit,
        )
        self.body_limit = config.herald.body_limit
        self.read_timeout = settings.read_timeout
        self.header_timeout = settings.header_timeout
        self.started: weakref.WeakSet[Any] = weakref.WeakSet()  # transports that sent a request's headers
        self.max_in_flight = settings.max_in_flight
        self.max_json_depth = settings.max_json_depth
        self.auth = Authenticator(settings.auth)
        self.in_flight = 0
        self.accepted = 0
        self.spooled = 0  # events answered 202 (in the spool)
        self.drained = 0  # spooled events produced to Kafka
        self.reject_log = _RateLog()
        self.spool: Spool | None = None
        if settings.spool.enabled:
            try:
                self.spool = Spool(Path(settings.spool.dir), settings.spool.max_bytes)
            except SpoolError as exc:
                raise ConfigError(f"herald.spool.dir: {exc}") from None
            self.writer.purge_on_outage = True
            metrics.watch_spool(self.spool)
        self._spool_io = ThreadPoolExecutor(1, thread_name_prefix="spool")  # appends and drain reads, in order
        self._appends: deque[tuple[SpoolRecord, asyncio.Future[bool]]] = deque()
        self._appending = 0  # records handed to the spool thread, not yet written
        self._append_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._spool_wake: asyncio.Event | None = None

    def _reject(self, status: int, kind: str, reason: str, request: web.Request,
                headers: dict[str, str] | None = None, close: bool = False) -> web.Response:
        self.reject_log(kind, "%s %s %s from %s: %s", status, request.method, request.path, request.remote, reason)
        resp = web.json_response({"error": reason}, status=status, headers=headers)
        if close:  # the rest of the body is not read: drop the connection
            resp.force_close()
        return resp

    def app(self) -> web.Application:
        # client_max_size slightly above the limit so we answer 413 ourselves with a clear body
        app = web.Application(client_max_size=self.body_limit + 1,
                              middlewares=[self._headers_received])
        metrics.init_bridge()
        app.router.add_post("/", self.ingest)
        app.router.add_post("/scan", self.ingest)
        app.router.add_post("/tenant/{route}", self.ingest)
        app.router.add_get("/ping", self.ping)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", metrics.metrics_handler)
        app.on_startup.append(self._on_startup)
        app.on_cleanup.append(self._on_cleanup)
        app.on_response_prepare.append(_close_if_body_unread)
        return app

    @web.middleware
    async def _headers_received(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        # one middleware for both: aiohttp wraps the handler again for each middleware of every request
        if request.transport is not None:
            self.started.add(request.transport)
        return await metrics.bridge_middleware(request, handler)

    async def _on_startup(self, app: web.Application) -> None:
        self.writer.start()
        if self.spool is not None:
            self._spool_wake = asyncio.Event()
            self._drain_task = asyncio.create_task(self._drain(), name="spool-drain")

    async def _on_cleanup(self, app: web.Application) -> None:
        if self._drain_task is not None:
            self._drain_task.cancel()
            await asyncio.gather(self._drain_task, return_exceptions=True)
        if self._append_task is not None:
            await asyncio.gather(self._append_task, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.close)
        self._spool_io.shutdown(wait=True)
        if self.spool is not None:
            if self.spool.records:
                log.info("%d spooled event(s) left for the next start (%s)", self.spool.records, self.spool.dir)
            self.spool.close()

    # -- the spool --------------------------------------------------------------------------------
    def spool_busy(self) -> bool:
        """Events wait in the spool (or are being written to it): new ones must queue behind them."""
        return self.spool is not None and (self.spool.records > 0 or self._appending > 0 or bool(self._appends))

    async def to_spool(self, record: SpoolRecord) -> bool:
        """Append ``record`` (fsync'd, group-committed with concurrent requests); False: the spool
        is full. Raises ``SpoolError`` when the disk fails."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._appends.append((record, fut))
        if self._append_task is None or self._append_task.done():
            self._append_task = asyncio.create_task(self._append_loop())
        return await fut

    async def _append_loop(self) -> None:
        assert self.spool is not None
        loop = asyncio.get_running_loop()
        while self._appends:
            batch = list(self._appends)
            self._appends.clear()
            self._appending += len(batch)
            try:
                taken = await loop.run_in_executor(self._spool_io, self.spool.append, [r for r, _ in batch])
            except SpoolError as exc:
                for _, fut in batch:
                    _set_exc(fut, exc)
            else:
                for (_, fut), ok in zip(batch, taken):
                    _set_result(fut, ok)
            finally:
                self._appending -= len(batch)
            if self._spool_wake is not None:
                self._spool_wake.set()

    async def _drain(self) -> None:
        """Produce the spool to Kafka, oldest first, whenever Kafka is reachable; the spool moves
        past a record only once Kafka acknowledged it (acks=all) and everything before it."""
        assert self.spool is not None and self._spool_wake is not None
        loop = asyncio.get_running_loop()
        spool, wake = self.spool, self._spool_wake
        while True:
            try:
                if not spool.records:
                    wake.clear()
                    try:
                        await asyncio.wait_for(wake.wait(), 1.0)
                    except TimeoutError:
                        pass
                    continue
                if not self.writer.ready:
                    await asyncio.sleep(0.2)
                    continue
                batch = await loop.run_in_executor(self._spool_io, spool.peek, DRAIN_BATCH)
                futures = [self.writer.produce(loop, record) for _, record in batch]
                results = await asyncio.gather(
                    *(asyncio.wait_for(f, PRODUCE_TIMEOUT_S + 5) for f in futures), return_exceptions=True)
                upto: Position | None = None
                failed: tuple[Position, SpoolRecord, BaseException] | None = None
                done = 0
                for (pos, record), result in zip(batch, results):
                    if isinstance(result, BaseException):
                        failed = (pos, record, result)
                        break
                    upto, done = pos, done + 1
                if failed is not None and record_error(failed[2]):
                    # it would fail forever and hold every event behind it: set it aside, loudly
                    # (any other error, e.g. authorisation, is Kafka's: the spool waits for it)
                    pos, record, exc = failed
                    await loop.run_in_executor(self._spool_io, self._set_aside, record, exc)
                    upto, failed = pos, None
                if upto is not None:
                    await loop.run_in_executor(self._spool_io, spool.ack, upto)
                    self.drained += done
                    if not spool.records:
                        log.info("spool drained: %d event(s) produced to Kafka since start", self.drained)
                if failed is not None:
                    self.reject_log("spool-drain", "spooled events wait: Kafka did not take event %s: %s",
                                    failed[1].header(H_EVENT_ID), failed[2])
                    await asyncio.sleep(1.0)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the drain must outlive any one failure
                log.error("spool drain failed (retrying in 5 s): %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(5.0)

    def _set_aside(self, record: SpoolRecord, exc: BaseException) -> None:
        assert self.spool is not None
        event_id = record.header(H_EVENT_ID) or f"unknown-{time.time_ns()}"
        rejected = self.spool.dir / "rejected"
        rejected.mkdir(exist_ok=True)
        path = rejected / f"{re.sub(r'[^A-Za-z0-9._-]', '_', event_id)}.rec"
        with open(path, "wb") as f:
            f.write(record.encode())
            f.flush()
            os.fsync(f.fileno())
        log.error("spooled event %s cannot be produced to %s (%s); kept in %s, not retried",
                  event_id, record.topic, exc, path)

    async def ping(self, request: web.Request) -> web.Response:
        return web.json_response("Postee alive!")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        """200 while events are accepted: Kafka is reachable, or the spool has room."""
        kafka = self.writer.ready
        body: dict[str, Any] = {"status": "ready", "kafka": "reachable" if kafka else "unreachable"}
        if self.spool is not None:
            body["spool"] = self.spool.depth()
        if kafka:
            return web.json_response(body)
        if self.spool is not None and not self.spool.full:
            body["status"] = "ready (spooling: Kafka is not reachable)"
            return web.json_response(body)
        body["status"] = "unavailable"
        body["error"] = "Kafka is not reachable" + ("; the spool is full" if self.spool is not None else "")
        return web.json_response(body, status=503)

    async def ingest(self, request: web.Request) -> web.Response:
        if self.in_flight >= self.max_in_flight:
            return self._reject(503, "busy", f"more than {self.max_in_flight} requests in flight; retry later",
                                request, {"Retry-After": "1"})
        self.in_flight += 1
        try:
            return await self._ingest(request)
        finally:
            self.in_flight -= 1

    async def _ingest(self, request: web.Request) -> web.Response:
        route = request.match_info.get("route")
        # authentication before the body is read: a request without credentials costs nothing
        method: str | None = None
        tokens: list[bytes] = []
        keys: list[bytes] = []
        if self.auth.mtls(request):
            method = "mtls"
        elif self.auth.required(route):
            tokens, keys = self.auth.credentials(route)
            bearer = self.auth.bearer(request, tokens)
            if bearer:
                method = "bearer"
            elif bearer is None and request.headers.get(self.auth.signature_header) is None:
                self.reject_log("unauthorized", "401 %s %s from %s", request.method, request.path, request.remote)
                return web.json_response({"error": "unauthorized"}, status=401,
                                         headers={"WWW-Authenticate": "Bearer"})
            elif not keys or request.headers.get(self.auth.signature_header) is None:
                self.reject_log("forbidden", "403 %s %s from %s", request.method, request.path, request.remote)
                return web.json_response({"error": "forbidden"}, status=403)
        if request.content_length is not None and request.content_length > self.body_limit:
            return self._reject(413, "size", f"body of {request.content_length} bytes exceeds the limit of "
                                f"{self.body_limit} bytes", request)
        try:
            body = await asyncio.wait_for(request.read(), self.read_timeout)
        except web.HTTPRequestEntityTooLarge:
            return self._reject(413, "size", f"body exceeds the limit of {self.body_limit} bytes", request)
        except TimeoutError:
            return self._reject(408, "timeout", f"body not received within {self.read_timeout:g}s", request,
                                close=True)
        except _CLIENT_ERRORS as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return self._reject(400, "body", f"cannot read the body ({type(exc).__name__}: {reason[:200]})",
                                request, close=True)
        if len(body) > self.body_limit:
            return self._reject(413, "size", f"body of {len(body)} bytes exceeds the limit of {self.body_limit} "
                                "bytes", request)
        if method is None and self.auth.required(route):
            if not self.auth.signature(request, body, keys):
                self.reject_log("forbidden", "403 %s %s from %s", request.method, request.path, request.remote)
                return web.json_response({"error": "forbidden"}, status=403)
            method = "hmac"
        if route is not None and route not in self.config.routes:  # after authentication: names stay private
            return self._reject(404, "route", f"unknown route {route!r}", request)
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):
                return self._reject(400, "depth", f"JSON nested deeper than {self.max_json_depth} levels", request)
            return self._reject(400, "json", f"body is not valid JSON: {exc}", request)
        if not isinstance(parsed, dict):
            return self._reject(400, "json", f"body must be a JSON object, got {type(parsed).__name__}", request)
        if json_depth(body, self.max_json_depth) > self.max_json_depth:
            return self._reject(400, "depth", f"JSON nested deeper than {self.max_json_depth} levels", request)
        event_id = new_event_id()
        logformat.bind(event_id=event_id, route=route)
        headers = [
            (H_EVENT_ID, event_id.encode()),
            (H_RECEIVED_AT, str(int(time.time() * 1000)).encode()),
            (H_SOURCE, (request.remote or "").encode()),
            (H_USER_AGENT, request.headers.get("User-Agent", "").encode()),
        ]
        if route is not None:
            headers.append((H_ROUTE, route.encode()))
        if method is not None:
            headers.append((H_AUTHENTICATED, method.encode()))
        record = SpoolRecord(self.writer.topic, event_id.encode(), body, headers)
        if self.spool is not None and (self.spool_busy() or not self.writer.ready):
            return await self._spool_answer(record, event_id, request)
        if not self.writer.ready:
            return _json_error(503, "Kafka is not reachable; retry later", retry_after=1)
        try:
            partition, offset = await self.writer.write(body, headers, event_id.encode())
        except (TimeoutError, KafkaException) as exc:
            if self.spool is not None and transient(exc):
                return await self._spool_answer(record, event_id, request)
            log.warning("event not accepted, Kafka did not acknowledge it: %s", exc)
            return web.json_response(
                {"error": "Kafka did not acknowledge the event; retry later"}, status=503, headers={"Retry-After": "1"}
            )
        self.accepted += 1
        return web.json_response({"event_id": event_id, "partition": partition, "offset": offset})

    async def _spool_answer(self, record: SpoolRecord, event_id: str, request: web.Request) -> web.Response:
        try:
            taken = await self.to_spool(record)
        except SpoolError as exc:
            log.error("event not accepted: %s", exc)
            return web.json_response({"error": "Kafka is not reachable and the spool cannot be written; retry "
                                      "later"}, status=503, headers={"Retry-After": SPOOL_RETRY_AFTER})
        if not taken:
            return self._reject(503, "spool-full", "Kafka is not reachable and the spool is full; retry later",
                                request, {"Retry-After": SPOOL_RETRY_AFTER})
        self.spooled += 1
        return web.json_response({"event_id": event_id, "spooled": True}, status=202)


class _HeaderDeadline:
    """aiohttp's protocol factory, with a deadline: a connection that has not sent a complete
    request's headers ``timeout`` seconds after it connected is closed, with one (rate-limited)
    log line (a slowloris). Requests after the first on a kept-alive connection are bounded by
    aiohttp's keepalive timeout, which the runner sets just above it."""

    def __init__(self, factory: Any, timeout: float, started: weakref.WeakSet[Any], reject_log: _RateLog) -> None:
        self.factory, self.timeout, self.started, self.reject_log = factory, timeout, started, reject_log

    def __call__(self) -> Any:
        handler = self.factory()
        asyncio.get_running_loop().call_later(self.timeout, self._check, handler)
        return handler

    def _check(self, handler: Any) -> None:
        transport = handler.transport
        if transport is None or transport.is_closing() or transport in self.started:
            return
        peer = transport.get_extra_info("peername")
        self.reject_log("header-timeout", "connection from %s sent no complete request headers within %gs; "
                        "closed", peer[0] if peer else "?", self.timeout)
        transport.abort()


class _Runner(web.AppRunner):
    """An AppRunner whose sites get ``_HeaderDeadline``'s protocol factory."""

    def __init__(self, app: web.Application, bridge: Bridge, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=bridge.header_timeout + 1, **kwargs)
        self.bridge = bridge

    @property
    def server(self) -> Any:
        real = super().server
        if real is None:
            return None
        return _HeaderDeadline(real, self.bridge.header_timeout, self.bridge.started, self.bridge.reject_log)


def _split(address: str, what: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise ConfigError(f"expected host:port, got {address!r}", what, address)
    return host or "0.0.0.0", int(port)


def tls_context(environ: dict[str, str] | None = None, client_ca: str = "") -> ssl.SSLContext:
    """HTTPS with Postee's variables ``AQUAALERT_CERT_PEM`` and ``AQUAALERT_KEY_PEM`` (no self-signed
    certificate is written next to the binary, unlike Postee). ``client_ca``: clients must present
    a certificate signed by it (mTLS)."""
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
    if client_ca:
        try:
            ctx.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load the client CA {client_ca}: {exc}", "herald.auth.client-ca") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def serve(config: Config, stop: asyncio.Event | None = None,
                reload_source: Callable[[], Config] | None = None) -> None:
    """Serve HTTP (and HTTPS when ``https-listen`` is set) until ``stop`` is set or cancelled.
    With ``reload_source``, SIGHUP re-reads routes, authentication and limits (``reload_bridge``).

    Raises ConfigError before binding anything when a non-loopback listener has no authentication."""
    problem = exposure_problem(config)
    if problem:
        raise ConfigError(problem)
    warning = exposure_warning(config)
    if warning:
        log.warning("%s", warning)
    if config.herald.auth.client_ca and not config.herald.https_listen:
        log.warning("herald.auth.client-ca is set but herald.https-listen is not: mTLS is off")
    bridge = Bridge(config)
    try:  # one size limit end to end: an events topic that cannot take a body-limit event stops us here
        await asyncio.get_running_loop().run_in_executor(None, bridge.writer.ensure_topic, 5.0)
    except KafkaUnavailableError as exc:
        log.warning("events topic not checked yet (Kafka: %s); checked once Kafka is reachable", exc)
    if reload_source is not None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_bridge, bridge, reload_source, "SIGHUP")
    runner = _Runner(bridge.app(), bridge, access_log=None)
    await runner.setup()
    host, port = _split(config.herald.http_listen, "herald.http-listen")
    sites = [web.TCPSite(runner, host, port)]
    if config.herald.https_listen:
        thost, tport = _split(config.herald.https_listen, "herald.https-listen")
        sites.append(web.TCPSite(runner, thost, tport, ssl_context=tls_context(client_ca=config.herald.auth.client_ca)))
    try:
        for site in sites:
            await site.start()
            log.info("bridge listening on %s (events topic %s)", site.name, bridge.topics.events)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


def run_bridge(config: Config, reload_source: Callable[[], Config]) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP reloads from ``reload_source`` (the CLI reads the config file
    again with the action registry: the bridge, core, does not import the actions)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until serve() handles it: an early SIGHUP must not kill
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(serve(config, stop, reload_source))
    finally:
        loop.close()


# herald settings a running bridge cannot change (listeners, Kafka, TLS): a SIGHUP that changes one is refused
BRIDGE_RESTART_ONLY = ("kafka_bootstrap_servers", "topic_prefix", "kafka", "http_listen", "https_listen",
                       "body_limit", "partitions", "replication_factor", "spool")


def reload_bridge(bridge: Any, source: Callable[[], Config], why: str) -> ReloadResult:
    """SIGHUP on ``herald bridge`` (and ``herald run``): tenant routes (``/tenant/{route}``), the
    credentials of ``herald.auth`` and the request limits (read-timeout, max-in-flight,
    max-json-depth) from the file again; a bad file, or a change to a setting that needs a restart,
    is refused and logged, and the running config stays."""
    blog = logging.getLogger("herald.bridge")
    old = bridge.config
    try:
        new = source()
        for key in BRIDGE_RESTART_ONLY:
            before, after = getattr(old.herald, key, None), getattr(new.herald, key, None)
            if before != after:
                shown = "" if key in ("kafka", "spool") else f" from {before!r} to {after!r}"
                raise ConfigError(f"changed{shown}; this setting takes effect only when the bridge restarts",
                                  f"herald.{key.replace('_', '-')}")
        if new.herald.auth.client_ca != old.herald.auth.client_ca:
            raise ConfigError("changed; the HTTPS listener takes a new client CA only when the bridge restarts",
                              "herald.auth.client-ca")
        problem = exposure_problem(new)
        if problem:
            raise ConfigError(problem)
    except HeraldError as exc:
        blog.error("bridge config reload (%s) refused, the running config stays: %s", why, exc)
        return ReloadResult(False, error=str(exc))
    s = new.herald
    bridge.config = new
    bridge.auth = Authenticator(s.auth)
    bridge.read_timeout = s.read_timeout
    bridge.max_in_flight = s.max_in_flight
    bridge.max_json_depth = s.max_json_depth
    for warning in new.warnings:
        blog.warning("config: %s", warning)
    blog.info("bridge config reloaded (%s): %d routes, authentication %s", why, len(new.routes),
              "required" if s.auth.configured() else "off")
    return ReloadResult(True)
