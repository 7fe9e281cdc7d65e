"""The worker: the router stage, the route-state stage and one stage per enabled action.

    events topic ──router──▶ action.<name> topics ──action stages──▶ destinations
                    │   └──▶ route.state ──route-state stage (dedup, aggregation)──▶ action.<name>
                    ├─▶ dlq.router, decisions                 └─▶ dlq.<name>, deliveries, delivered.<name>

One consumer (``agents.kafkaio``) in the worker's consumer group reads every input topic; its
messages are handed to the stage of their topic on the event loop. Routing, rendering and
delivering are plain functions and classes (``app.router``, ``app.runner``, ``actions``); this
module only moves messages between them and Kafka.

Delivery semantics (at least once): a message is finished, and its offset may be committed,
only once its stage is done and every record it produced is acknowledged by the broker. No
exception escapes a stage: any failure becomes a dead-letter record with the source topic,
partition and offset. Redeliveries after a crash are suppressed by the delivered-keys log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import deque
from typing import Any

import orjson

from actions import action_class
from actions.base import Action
from agents.kafkaio import TP, KafkaFatalError, KafkaIO, Ticket
from agents.stateful import RouteState
from app import metrics
from app.config import Config
from app.delivered import RETENTION_S, DeliveredKeys
from app.errors import EventError
from app.kafka_admin import ensure_topics, wait_topics
from app.kafka_client import client_config
from app.messages import ActionMessage, DeadLetter
from app.router import EventMeta, Router
from app.runner import Outcome, RetryPolicy, deliver
from app.topics import Topics

log = logging.getLogger("herald.worker")

# the router yields the event loop after this much CPU, so deliveries keep flowing under load
ROUTER_SLICE_S = 0.005


class Worker:
    def __init__(self, config: Config, router: Router | None = None) -> None:
        self.config = config
        self.topics = Topics(config.herald.topic_prefix)
        self.router = router or Router(config)
        for err in self.router.errors:
            log.error("%s", err)
        self.route_templates = {name: r.template for name, r in config.routes.items()}
        self.actions: dict[str, Action] = {  # type: ignore[type-arg]
            name: action_class(cfg.type)(cfg) for name, cfg in config.actions.items()
        }
        self.action_topics = {n: self.topics.action(n) for n in config.actions}
        self.stage_of_topic = {t: n for n, t in self.action_topics.items()}
        self.kafka_conf = conf = client_config(config.herald)
        self.delivered = {n: DeliveredKeys(conf, self.topics.delivered(n)) for n in config.actions}
        self.state = RouteState(self, self.topics.route_state, self.topics.route_state_changelog)
        self.io = KafkaIO(
            conf, config.herald.consumer_group, self.input_topics(), self._dispatch,
            on_assigned=self._on_assigned, on_revoked=self._on_revoked,
            instance_id=config.herald.group_instance_id,
        )
        self._router_queue: deque[Ticket] = deque()
        self._router_wake = asyncio.Event()
        self._state_queue: deque[Ticket] = deque()
        self._state_wake = asyncio.Event()
        self._action_queues: dict[str, asyncio.Queue[Ticket]] = {n: asyncio.Queue() for n in config.actions}
        self._load_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._delivering: dict[tuple[str, str], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.routed = 0
        metrics.init_worker(config.routes, config.actions)

    def input_topics(self) -> list[str]:
        return [self.topics.events, self.topics.route_state, *self.action_topics.values()]

    def topic_names(self) -> list[str]:
        return self.topics.all_for(list(self.config.actions))

    # -- plumbing -----------------------------------------------------------------------------
    def _dispatch(self, tickets: list[Ticket]) -> None:
        events, state = self.topics.events, self.topics.route_state
        for t in tickets:
            if t.topic == events:
                self._router_queue.append(t)
                self._router_wake.set()
            elif t.topic == state:
                self._state_queue.append(t)
                self._state_wake.set()
            else:
                name = self.stage_of_topic.get(t.topic)
                if name is None:
                    log.warning("message of unexpected topic %s skipped", t.topic)
                    self.io.done(t)
                else:
                    self._action_queues[name].put_nowait(t)

    def _on_assigned(self, tps: list[TP]) -> None:
        for name in self.config.actions:
            # keys delivered by the previous owner are read back before this worker's first message
            # of the partition (in deliver_one: a slow rebalance callback would stall the consumer)
            self.delivered[name].loaded.difference_update(p for t, p in tps if t == self.action_topics[name])
        self.state.assigned([p for t, p in tps if t == self.topics.route_state])
        mine = sorted(f"{t}[{p}]" for t, p in self.io.assignment)
        log.info("herald worker ready: %d partitions assigned: %s", len(mine), " ".join(mine))

    def _on_revoked(self, tps: list[TP]) -> None:
        for name in self.config.actions:
            self.delivered[name].loaded.difference_update(p for t, p in tps if t == self.action_topics[name])
        self.state.revoked([p for t, p in tps if t == self.topics.route_state])
        log.info("partitions revoked: %s", " ".join(f"{t}[{p}]" for t, p in sorted(tps)))

    def send(self, topic: str, key: str, value: bytes | None, ticket: Ticket | None, partition: int | None = None) -> None:
        self.io.produce(topic, key, value, ticket, partition)

    def dead_letter(self, stage: str, ticket: Ticket, error: str, error_type: str, *, event_id: str = "",
                    attempts: int = 0, original: Any = None, outcome: Outcome | None = None) -> None:
        """A dead letter for ``ticket``'s message, on ``dlq.router`` or ``dlq.<action>``."""
        now = time.time()
        record = DeadLetter(
            stage=stage, error=error, error_type=error_type, attempts=outcome.attempts if outcome else attempts,
            first_attempt_at=outcome.first_attempt_at if outcome else now,
            last_attempt_at=outcome.last_attempt_at if outcome else now,
            source_topic=ticket.topic, source_partition=ticket.partition, source_offset=ticket.offset,
            event_id=event_id, status=outcome.status if outcome else None,
            original=ticket.value.decode("utf-8", "replace") if original is None else original,
        )
        topic = self.topics.router_dlq if stage == "router" else self.topics.dlq(stage)
        metrics.dead_letters.labels(stage).inc()
        self.send(topic, event_id or f"{ticket.topic}-{ticket.partition}-{ticket.offset}", record.to_json(), ticket)

    def emit(self, message: ActionMessage, ticket: Ticket) -> None:
        """Send ``message`` to every enabled action of its route (each action gets every batch)."""
        for action in self.config.route_actions(self.config.routes[message.route]):
            message.action = action
            metrics.action_messages.labels(action).inc()
            self.send(self.action_topics[action], message.event_id, message.to_json(), ticket)

    def record_decision(self, record: dict[str, Any], ticket: Ticket) -> None:
        self.send(self.topics.decisions, record["event_id"], orjson.dumps(record), ticket)

    # -- router stage -------------------------------------------------------------------------
    async def _router_loop(self) -> None:
        queue = self._router_queue
        while True:
            if not queue:
                self._router_wake.clear()
                await self._router_wake.wait()
                continue
            started = time.process_time()
            while queue and time.process_time() - started < ROUTER_SLICE_S:
                ticket = queue.popleft()
                if not self.io.current(ticket):
                    self.io.skip(ticket)
                    continue
                try:
                    self.route_one(ticket)
                except KafkaFatalError:
                    return  # the worker is stopping; the message is read again by the next one
                except Exception as exc:  # nothing escapes the stage
                    log.error("router failed on %s[%s]@%s: %s: %s", ticket.topic, ticket.partition, ticket.offset,
                              type(exc).__name__, exc)
                    self.dead_letter("router", ticket, f"{type(exc).__name__}: {exc}", "InternalError", attempts=1)
                self.io.done(ticket)
            await asyncio.sleep(0)

    def route_one(self, ticket: Ticket) -> None:
        metrics.router_events.inc()
        msg = ticket.msg
        ts_type, ts_ms = msg.timestamp()
        meta = EventMeta.from_headers(msg.headers(), f"{ticket.topic}-{ticket.partition}-{ticket.offset}",
                                      ts_ms / 1000 if ts_ms > 0 else time.time())
        raw = ticket.value
        try:
            result = self.router.route(raw, meta)
        except EventError as exc:
            self.dead_letter("router", ticket, str(exc), "EventError", event_id=meta.event_id, attempts=1)
            return
        for message in result.messages:
            self.send(self.action_topics[message.action], message.event_id, message.to_json(), ticket)
        for item in result.stateful:
            self.state.submit(item, ticket)
        for failure in result.failures:
            self.dead_letter("router", ticket, f"route {failure.route}: {failure.error}", failure.error_type,
                             event_id=meta.event_id, attempts=1)
        metrics.observe_routing(result)
        decision = result.decision(self.router.config_hash, self.route_templates)
        decision.update(topic=ticket.topic, partition=ticket.partition, offset=ticket.offset,
                        received_at=meta.received_at)
        self.record_decision(decision, ticket)
        self.routed += 1

    # -- route-state stage --------------------------------------------------------------------
    async def _state_loop(self) -> None:
        queue = self._state_queue
        while True:
            if not queue:
                self._state_wake.clear()
                await self._state_wake.wait()
                continue
            ticket = queue.popleft()
            if not self.io.current(ticket):
                self.io.skip(ticket)
                continue
            try:
                await self.state.handle(ticket)
            except KafkaFatalError:
                return  # the worker is stopping; the message is read again by the next one
            except Exception as exc:  # nothing escapes the stage
                log.error("route-state failed on %s[%s]@%s: %s: %s", ticket.topic, ticket.partition, ticket.offset,
                          type(exc).__name__, exc)
                self.dead_letter("router", ticket, f"{type(exc).__name__}: {exc}", "InternalError")
                self.io.done(ticket)

    # -- action stages ------------------------------------------------------------------------
    async def _action_loop(self, name: str) -> None:
        queue = self._action_queues[name]
        while True:
            ticket = await queue.get()
            if not self.io.current(ticket):
                self.io.skip(ticket)
                continue
            try:
                await self.deliver_one(name, ticket)
            except asyncio.CancelledError:
                raise
            except KafkaFatalError:
                return  # the worker is stopping; the message is read again by the next one
            except Exception as exc:  # nothing escapes the stage
                log.error("action %s failed on offset %s: %s: %s", name, ticket.offset, type(exc).__name__, exc)
                self.dead_letter(name, ticket, f"{type(exc).__name__}: {exc}", "InternalError")
            self.io.done(ticket)

    def _delivery(self, m: ActionMessage, name: str, attempt: int, outcome: str, status: int | None = None,
                  error: str = "", latency_ms: float = 0) -> bytes:
        return orjson.dumps({
            "event_id": m.event_id, "route": m.route, "action": name, "attempt": attempt, "outcome": outcome,
            "status": status, "error": error, "latency_ms": latency_ms, "time": time.time(), "redrive": m.redrive,
        })

    async def deliver_one(self, name: str, ticket: Ticket) -> Outcome | None:
        raw = ticket.value
        partition = ticket.partition
        try:
            message = ActionMessage.from_json(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.dead_letter(name, ticket, f"malformed action message: {exc}", "MessageError")
            return None

        delivered = self.delivered[name]
        if partition not in delivered.loaded:
            async with self._load_locks.setdefault((name, partition), asyncio.Lock()):
                if partition not in delivered.loaded:  # another delivery of this action may have done it
                    n = await asyncio.get_running_loop().run_in_executor(None, delivered.load, [partition])
                    log.info("action %s: %d recently delivered keys read back for partition %d", name, n, partition)
        key = message.idempotency_key
        # a copy read again after a rebalance can arrive while the first is still being delivered:
        # wait for it, then look at the delivered keys
        while (pending := self._delivering.get((name, key))) is not None:
            await pending.wait()
        if delivered.seen(partition, key):
            delivered.suppressed += 1
            metrics.deliveries.labels(name, "duplicate_suppressed").inc()
            log.debug("action %s: %s was already delivered; redelivery suppressed", name, key)
            self.send(self.topics.deliveries, message.event_id,
                      self._delivery(message, name, 0, "duplicate-suppressed"), ticket)
            return None

        async def on_attempt(m: ActionMessage, attempt: int, outcome: Outcome) -> None:
            metrics.observe_attempt(name, outcome)
            self.send(self.topics.deliveries, m.event_id, self._delivery(
                m, name, attempt, "delivered" if outcome.delivered else "failed", outcome.status, outcome.error,
                round(outcome.latency * 1000, 3)), ticket)

        done = self._delivering[(name, key)] = asyncio.Event()
        try:
            outcome = await deliver(self.actions[name], message, RetryPolicy.of(self.actions[name].config),
                                    on_attempt=on_attempt)
            if outcome.delivered:
                delivered.mark(partition, key)
        finally:
            del self._delivering[(name, key)]
            done.set()
        metrics.observe_delivery(name, outcome, message.received_at)
        if outcome.delivered:
            # wait until the key is durable before this slot takes another message: a crash then
            # redelivers at most the deliveries in flight (``concurrency``), never finished ones too
            await self.io.produce_acked(self.topics.delivered(name), key, b"%.3f" % time.time(), ticket,
                                        partition=partition)
        else:
            self.dead_letter(name, ticket, outcome.error, outcome.error_type, event_id=message.event_id,
                             original=orjson.loads(raw), outcome=outcome)
            log.warning("action %s: dead-lettered event %s after %d attempt(s): %s",
                        name, message.event_id, outcome.attempts, outcome.error)
        return outcome

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal Kafka error; returns the process exit code."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.io.stop)
        for name, action in self.actions.items():
            await action.start()
        self._tasks.append(asyncio.create_task(self._router_loop(), name="router"))
        self._tasks.append(asyncio.create_task(self._state_loop(), name="route-state"))
        for name, cfg in self.config.actions.items():
            for i in range(cfg.concurrency):
                self._tasks.append(asyncio.create_task(self._action_loop(name), name=f"action-{name}-{i}"))
        self._tasks += self.state.background_tasks()
        self.io.start()
        assert self.io.stopped is not None
        await self.io.stopped
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for action in self.actions.values():
            try:
                await action.close()
            except Exception as exc:  # noqa: BLE001 - a failing close must not hide the exit status
                log.warning("action %s did not close cleanly: %s", action.name, exc)
        if self.io.fatal:
            log.error("worker stopped: %s", self.io.fatal)
            return 1
        log.info("worker stopped")
        return 0


def ensure_worker_topics(worker: Worker) -> None:
    s = worker.config.herald
    retention = {"retention.ms": str(int(RETENTION_S * 1000))}
    configs = {worker.topics.delivered(n): retention for n in worker.config.actions}
    configs[worker.topics.route_state_changelog] = {"cleanup.policy": "compact"}
    ensure_topics(worker.kafka_conf, worker.topic_names(), s.partitions, s.replication_factor,
                  configs=configs)
    wait_topics(worker.kafka_conf, worker.input_topics())


def run_worker(config: Config) -> int:
    async def main() -> int:
        worker = Worker(config)
        ensure_worker_topics(worker)
        return await worker.run()

    return asyncio.run(main())
