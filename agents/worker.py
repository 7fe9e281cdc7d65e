"""The worker: one faust app with the router agent and one agent per enabled action.

    events topic ──router agent──▶ action.<name> topics ──action agents──▶ destinations
                       │                                       │
                       ├─▶ dlq.router, decisions               └─▶ dlq.<name>, deliveries

Delivery semantics (at least once): an agent finishes an event only after its outgoing messages
are handed to the producer, and faust flushes the producer before it commits offsets, so a
committed offset never hides an unsent message. No exception escapes an agent loop: any failure
becomes a dead-letter record with the source topic, partition and offset.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
import traceback
from typing import Any

import faust
import orjson

from actions import action_class
from actions.base import Action
from agents import offsets
from agents.stateful import RouteState
from app.config import Config
from app.delivered import RETENTION_S, DeliveredKeys
from app.errors import EventError
from app.kafka_admin import ensure_topics
from app.messages import ActionMessage, DeadLetter
from app.router import EventMeta, Router
from app.runner import Outcome, RetryPolicy, deliver
from app.topics import Topics

log = logging.getLogger("herald.worker")


def broker_urls(bootstrap: str) -> list[str]:
    return [f"kafka://{h.strip()}" for h in bootstrap.split(",") if h.strip()]


def make_faust_app(config: Config) -> faust.App:
    s = config.herald
    app = faust.App(
        s.consumer_group,
        broker=broker_urls(s.kafka_bootstrap_servers),
        store="memory://",
        # faust wants a data directory even with the memory store; keep it out of the working tree
        datadir=os.environ.get("HERALD_DATA_DIR", os.path.join(tempfile.gettempdir(), "herald-faust")),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.002,
        # aiokafka keeps one batch per partition and one produce request in flight per broker, and
        # an agent's send waits while its partition's batch is full: with the 16 KiB default an
        # action message (event + rendering, ~17 KB for an Aqua scan) filled a batch alone, so
        # each round trip carried one message per partition.
        producer_max_batch_size=512 * 1024,
        # per partition and fetch; aiokafka fetches a partition again only once its previous records
        # are consumed, and the 1 MiB default is ~60 action messages: the action agents waited for
        # messages (~370 -> ~520 deliveries/s in bench/run.py's direct phase, +15 MB RSS)
        consumer_max_fetch_size=4 * 1024 * 1024,
        broker_commit_interval=1.0,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=20.0,
        broker_request_timeout=30.0,
        stream_buffer_maxsize=4096,
        processing_guarantee="at_least_once",
    )
    offsets.install(app)  # commit offsets that never skip a message still in flight
    return app


class Worker:
    """Builds the faust app for a config; the pieces are plain objects so tests can drive them."""

    def __init__(self, config: Config, router: Router | None = None) -> None:
        self.config = config
        self.topics = Topics(config.herald.topic_prefix)
        self.app = make_faust_app(config)
        self.router = router or Router(config)
        for err in self.router.errors:
            log.error("%s", err)
        raw = {"value_serializer": "raw", "key_serializer": "raw", "internal": False}
        self.events = self.app.topic(self.topics.events, **raw)
        self.router_dlq = self.app.topic(self.topics.router_dlq, **raw)
        self.decisions = self.app.topic(self.topics.decisions, **raw)
        self.deliveries = self.app.topic(self.topics.deliveries, **raw)
        self.action_topics = {n: self.app.topic(self.topics.action(n), **raw) for n in config.actions}
        self.dlq_topics = {n: self.app.topic(self.topics.dlq(n), **raw) for n in config.actions}
        self.actions: dict[str, Action] = {  # type: ignore[type-arg]
            name: action_class(cfg.type)(cfg) for name, cfg in config.actions.items()
        }
        self.delivered_topics = {n: self.app.topic(self.topics.delivered(n), **raw) for n in config.actions}
        self.delivered = {
            n: DeliveredKeys(config.herald.kafka_bootstrap_servers, self.topics.delivered(n)) for n in config.actions
        }
        self.app.agent(self.events, name="herald.router")(self._router_agent)
        self.state = RouteState(self)
        for name, cfg in config.actions.items():
            self.app.agent(self.action_topics[name], name=f"herald.action.{name}", concurrency=cfg.concurrency)(
                self._make_action_agent(name)
            )
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self._started: set[str] = set()
        self._load_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._delivering: dict[tuple[str, str], asyncio.Event] = {}
        self.route_templates = {name: r.template for name, r in config.routes.items()}
        self._start_lock = asyncio.Lock()
        self.routed = 0

    async def _on_assigned(self, sender: Any, assigned: Any, **kwargs: Any) -> None:
        mine = sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned if tp.topic.startswith(self.topics.prefix))
        for name in self.config.actions:
            # keys delivered by the previous owner are read back before this worker's first message
            # of the partition (in deliver_one, not here: a slow rebalance callback stalls faust)
            self.delivered[name].loaded.difference_update(
                tp.partition for tp in assigned if tp.topic == self.topics.action(name))
        log.info("herald worker ready: %d partitions assigned: %s", len(mine), " ".join(mine))

    def topic_names(self) -> list[str]:
        return self.topics.all_for(list(self.config.actions))

    async def send(self, topic: faust.TopicT, key: str, value: bytes, partition: int | None = None) -> None:
        # Hand the message to the producer now (Topic.send would hold it until the next commit
        # unless forced, and costs ~0.1 ms a message in faust's bookkeeping, four messages an
        # event); faust flushes this producer before committing offsets, so a committed offset
        # never hides an unsent message.
        producer = await self.app.maybe_start_producer()
        fut = await producer.send(topic.get_topic_name(), key.encode(), value, partition, None, None)
        if isinstance(fut, asyncio.Future):
            fut.add_done_callback(self._on_sent)

    def _on_sent(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            # The message may be lost if its source offset gets committed: stop the worker so the
            # uncommitted events are processed again by the next one.
            log.critical("producing to Kafka failed, stopping the worker: %s", fut.exception())
            asyncio.ensure_future(self.app.crash(fut.exception()))  # type: ignore[arg-type]

    # -- router -------------------------------------------------------------------------------
    async def _router_agent(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                await self.route_one(event.value, event.headers, msg.topic, msg.partition, msg.offset, msg.timestamp)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # nothing escapes the agent loop
                log.exception("router failed on %s[%s]@%s", msg.topic, msg.partition, msg.offset)
                await self.router_dead_letter(
                    f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=5)}", "InternalError",
                    "", event.value, msg.topic, msg.partition, msg.offset,
                )

    async def route_one(self, raw: bytes, headers: Any, topic: str, partition: int, offset: int, ts: float) -> None:
        meta = EventMeta.from_headers(headers, f"{topic}-{partition}-{offset}", ts)
        try:
            result = self.router.route(raw, meta)
        except EventError as exc:
            await self.router_dead_letter(str(exc), "EventError", meta.event_id, raw, topic, partition, offset)
            return
        for message in result.messages:
            await self.send(self.action_topics[message.action], message.event_id, message.to_json())
        for item in result.stateful:
            await self.state.submit(item)
        for failure in result.failures:
            await self.router_dead_letter(
                f"route {failure.route}: {failure.error}", failure.error_type, meta.event_id, raw, topic, partition, offset
            )
        decision = result.decision(self.router.config_hash, self.route_templates)
        decision.update(topic=topic, partition=partition, offset=offset, received_at=meta.received_at)
        await self.send(self.decisions, meta.event_id, orjson.dumps(decision))
        self.routed += 1

    async def router_dead_letter(
        self, error: str, error_type: str, event_id: str, raw: bytes, topic: str, partition: int, offset: int
    ) -> None:
        await self._dead_letter_now(self.router_dlq, "router", error, error_type, raw, topic, partition, offset,
                                    event_id=event_id, attempts=1)

    async def _dead_letter_now(
        self, dlq: faust.TopicT, stage: str, error: str, error_type: str, raw: bytes, topic: str, partition: int,
        offset: int, event_id: str = "", attempts: int = 0,
    ) -> None:
        """A dead letter for a message that failed before (or instead of) any delivery attempt."""
        now = time.time()
        record = DeadLetter(
            stage=stage, error=error, error_type=error_type, attempts=attempts, first_attempt_at=now,
            last_attempt_at=now, source_topic=topic, source_partition=partition, source_offset=offset,
            event_id=event_id, original=raw.decode("utf-8", "replace"),
        )
        await self.send(dlq, event_id or f"{topic}-{partition}-{offset}", record.to_json())

    async def emit(self, message: ActionMessage) -> None:
        """Send ``message`` to every enabled action of its route (each action gets every batch)."""
        route = self.config.routes[message.route]
        for action in self.config.route_actions(route):
            message.action = action
            await self.send(self.action_topics[action], message.event_id, message.to_json())

    # -- actions ------------------------------------------------------------------------------
    def _make_action_agent(self, name: str) -> Any:
        async def action_agent(stream: faust.StreamT) -> None:
            await self._ensure_started(name)
            async for event in stream.events():
                msg = event.message
                try:
                    await self.deliver_one(name, event.value, msg.topic, msg.partition, msg.offset)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # nothing escapes the agent loop
                    log.exception("action agent %s failed on offset %s", name, msg.offset)
                    await self._dead_letter_now(self.dlq_topics[name], name, f"{type(exc).__name__}: {exc}",
                                                "InternalError", event.value, msg.topic, msg.partition, msg.offset)

        action_agent.__name__ = f"action_{name}"
        return action_agent

    async def _ensure_started(self, name: str) -> None:
        async with self._start_lock:
            if name not in self._started:
                await self.actions[name].start()
                self._started.add(name)

    async def deliver_one(self, name: str, raw: bytes, topic: str, partition: int, offset: int) -> Outcome | None:
        action = self.actions[name]
        try:
            message = ActionMessage.from_json(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            await self._dead_letter_now(self.dlq_topics[name], name, f"malformed action message: {exc}",
                                        "MessageError", raw, topic, partition, offset)
            return None

        delivered = self.delivered[name]
        if partition not in delivered.loaded:
            async with self._load_locks.setdefault((name, partition), asyncio.Lock()):
                if partition not in delivered.loaded:  # another actor of this agent may have done it
                    n = await asyncio.get_running_loop().run_in_executor(None, delivered.load, [partition])
                    log.info("action %s: %d recently delivered keys read back for partition %d", name, n, partition)
        key = message.idempotency_key
        # a copy read again by a rewind can arrive while the first is still being delivered (the
        # agent delivers several messages at once): wait for it, then look at the delivered keys
        while (pending := self._delivering.get((name, key))) is not None:
            await pending.wait()
        if delivered.seen(partition, key):
            delivered.suppressed += 1
            log.debug("action %s: %s was already delivered; redelivery suppressed", name, key)
            record = {"event_id": message.event_id, "route": message.route, "action": name, "attempt": 0,
                      "outcome": "duplicate-suppressed", "status": None, "error": "", "latency_ms": 0,
                      "time": time.time(), "redrive": message.redrive}
            await self.send(self.deliveries, message.event_id, orjson.dumps(record))
            return None

        async def on_attempt(m: ActionMessage, attempt: int, outcome: Outcome) -> None:
            record = {
                "event_id": m.event_id, "route": m.route, "action": name, "attempt": attempt,
                "outcome": "delivered" if outcome.delivered else "failed", "status": outcome.status,
                "error": outcome.error, "latency_ms": round(outcome.latency * 1000, 3), "time": time.time(),
                "redrive": m.redrive,
            }
            await self.send(self.deliveries, m.event_id, orjson.dumps(record))

        done = self._delivering[(name, key)] = asyncio.Event()
        try:
            outcome = await deliver(action, message, RetryPolicy.of(action.config), on_attempt=on_attempt)
            if outcome.delivered:
                delivered.mark(partition, key)
        finally:
            del self._delivering[(name, key)]
            done.set()
        if outcome.delivered:
            await self.send(self.delivered_topics[name], key, b"%.3f" % time.time(), partition=partition)
        else:
            record = DeadLetter(
                stage=name, error=outcome.error, error_type=outcome.error_type, attempts=outcome.attempts,
                first_attempt_at=outcome.first_attempt_at, last_attempt_at=outcome.last_attempt_at,
                source_topic=topic, source_partition=partition, source_offset=offset,
                event_id=message.event_id, status=outcome.status, original=orjson.loads(raw),
            )
            await self.send(self.dlq_topics[name], message.event_id, record.to_json())
            log.warning("action %s: dead-lettered event %s after %d attempt(s): %s",
                        name, message.event_id, outcome.attempts, outcome.error)
        return outcome


def ensure_worker_topics(worker: Worker) -> None:
    s = worker.config.herald
    retention = {"retention.ms": str(int(RETENTION_S * 1000))}
    ensure_topics(s.kafka_bootstrap_servers, worker.topic_names(), s.partitions, s.replication_factor,
                  configs={worker.topics.delivered(n): retention for n in worker.config.actions})


def run_worker(config: Config, loglevel: str = "info") -> None:
    worker = Worker(config)
    ensure_worker_topics(worker)
    faust.Worker(worker.app, loglevel=loglevel, quiet=True, redirect_stdouts=False).execute_from_commandline()
