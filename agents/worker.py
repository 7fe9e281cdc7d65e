"""The worker: the router stage, the route-state stage and one stage per enabled action.

    events topic ──router──▶ action.<name> topics ──action stages──▶ destinations
                    │   └──▶ route.state ──route-state stage (dedup, aggregation)──▶ action.<name>
                    ├─▶ dlq.router, decisions                 └─▶ dlq.<name>, deliveries, delivered.<name>

One consumer (``agents.kafkaio``) in the worker's consumer group reads every input topic; its
messages are handed to the stage of their topic on the event loop. Routing, rendering and
delivering are plain functions and classes (``app.routing.router``, ``actions.runner``, ``actions``); this
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
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaException

from actions import action_class
from actions.base import AnyAction
from agents.kafkaio import KafkaFatalError, KafkaIO, Ticket
from agents.offsets import TP
from agents.stateful import RouteState
from app.telemetry import logformat, metrics
from agents.admin import Admin, admin_exposure_problem
from app.config.reload import ReloadResult, config_hash
from actions import load_config
from app.config.loader import Config
from app.kafka.delivered import RETENTION_S, DeliveredKeys
from app.errors import ConfigError, EventError, HeraldError
from app.kafka.admin import admin as kafka_admin
from app.kafka.admin import ensure_topics, wait_topics
from app.kafka.client import client_config, consumer_config
from app.messages import ActionMessage, DeadLetter
from app.routing.router import EventMeta, Router
from actions.runner import Outcome, RetryPolicy, deliver
from app.kafka.topics import SizeLimits, Topics

log = logging.getLogger("herald.worker")

# the router yields the event loop after this much CPU, so deliveries keep flowing under load
ROUTER_SLICE_S = 0.005

# herald settings a running worker cannot change: a reload that changes one is refused
RESTART_ONLY = ("kafka_bootstrap_servers", "topic_prefix", "consumer_group", "group_instance_id", "kafka",
                "admin_listen")
# how often a removed action's topic is checked for messages still to deliver
DRAIN_CHECK_S = 2.0


class Worker:
    def __init__(self, config: Config, router: Router | None = None,
                 reload_source: Callable[[], Config] | None = None) -> None:
        self.config = config
        # how a reload reads the config: the file again, with the command line's overrides
        self.reload_source = reload_source or (lambda: load_config(config.path))
        self.topics = Topics(config.herald.topic_prefix)
        self.router = router or Router(config)
        for err in self.router.errors:
            log.error("%s", err)
        self.route_templates = {name: r.template for name, r in config.routes.items()}
        self.actions: dict[str, AnyAction] = {
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
            max_message_bytes=SizeLimits(config.herald.body_limit).pipeline,
        )
        self._router_queue: deque[Ticket] = deque()
        self._router_wake = asyncio.Event()
        self._state_queue: deque[Ticket] = deque()
        self._state_wake = asyncio.Event()
        self._action_queues: dict[str, asyncio.Queue[Ticket | None]] = {n: asyncio.Queue() for n in config.actions}
        self._loops: dict[str, int] = {}  # action stage loops running, per action
        self._in_use: dict[AnyAction, int] = {}  # deliveries running per action instance
        self._replaced: list[AnyAction] = []  # instances a reload replaced: closed once idle
        self.retired: dict[str, float] = {}  # removed actions whose topic may still hold messages -> since
        self._reload_lock = asyncio.Lock()
        self.reloads = 0
        self.joined = False
        self._load_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._delivering: dict[tuple[str, str], asyncio.Event] = {}
        self._tasks: list[asyncio.Task[object]] = []
        self.routed = 0
        self.admin: Admin | None = None
        self.config_hash = config_hash(config)
        self._target_loops: dict[str, int] = {}
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
        self.joined = True
        for name, delivered in self.delivered.items():
            # keys delivered by the previous owner are read back before this worker's first message
            # of the partition (in deliver_one: a slow rebalance callback would stall the consumer)
            delivered.loaded.difference_update(p for t, p in tps if t == self.action_topics.get(name))
        self.state.assigned([p for t, p in tps if t == self.topics.route_state])
        mine = sorted(f"{t}[{p}]" for t, p in self.io.assignment)
        log.info("herald worker ready: %d partitions assigned: %s", len(mine), " ".join(mine))

    def _on_revoked(self, tps: list[TP]) -> None:
        for name, delivered in self.delivered.items():
            delivered.loaded.difference_update(p for t, p in tps if t == self.action_topics.get(name))
        self.state.revoked([p for t, p in tps if t == self.topics.route_state])
        log.info("partitions revoked: %s", " ".join(f"{t}[{p}]" for t, p in sorted(tps)))

    def produce(self, topic: str, key: str, value: bytes | None, ticket: Ticket | None, partition: int | None = None) -> None:
        self.io.produce(topic, key, value, ticket, partition)

    def dead_letter(self, stage: str, ticket: Ticket, error: str, error_type: str, *, event_id: str = "",
                    attempts: int = 0, original: Any = None, outcome: Outcome | None = None) -> None:
        """A dead letter for ``ticket``'s message, on ``dlq.router`` or ``dlq.<action>``."""
        record = _dead_letter_record(stage, ticket, error, error_type, event_id,
                                     ticket.value.decode("utf-8", "replace") if original is None else original,
                                     outcome, attempts)
        topic = self.topics.router_dlq if stage == "router" else self.topics.dlq(stage)
        metrics.inc(metrics.dead_letters, stage)
        self.produce(topic, event_id or f"{ticket.topic}-{ticket.partition}-{ticket.offset}", record.to_json(), ticket)

    def emit(self, message: ActionMessage, ticket: Ticket) -> None:
        """Send ``message`` to every enabled action of its route (each action gets every batch)."""
        for action in self.config.route_actions(self.config.routes[message.route]):
            message.action = action
            metrics.inc(metrics.action_messages, action)
            self.produce(self.action_topics[action], message.event_id, message.to_json(), ticket)

    def record_decision(self, record: dict[str, Any], ticket: Ticket) -> None:
        self.produce(self.topics.decisions, record["event_id"], orjson.dumps(record), ticket)

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
        logformat.bind(event_id=meta.event_id, route=meta.route)
        raw = ticket.value
        try:
            result = self.router.route(raw, meta)
        except EventError as exc:
            self.dead_letter("router", ticket, str(exc), "EventError", event_id=meta.event_id, attempts=1)
            return
        for message in result.messages:
            self.produce(self.action_topics[message.action], message.event_id, message.to_json(), ticket)
        for item in result.stateful:
            self.state.submit(item, ticket)
        for failure in result.failures:
            self.dead_letter("router", ticket, f"route {failure.route}: {failure.error}", failure.error_type,
                             event_id=meta.event_id, attempts=1)
        metrics.observe_routing(result)
        decision = result.decision(self.config_hash, self.route_templates)
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
        self._loops[name] = self._loops.get(name, 0) + 1
        try:
            await self._action_loop_body(name, queue)
        finally:
            self._loops[name] -= 1

    async def _action_loop_body(self, name: str, queue: asyncio.Queue[Ticket | None]) -> None:
        while True:
            ticket = await queue.get()
            if ticket is None:  # a reload lowered the concurrency or retired the action
                return
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
        logformat.bind(action=name)
        try:
            message = ActionMessage.from_json(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            self.dead_letter(name, ticket, f"malformed action message: {exc}", "MessageError")
            return None
        logformat.bind(event_id=message.event_id, route=message.route, action=name)

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
            metrics.inc(metrics.deliveries, name, "duplicate_suppressed")
            log.debug("action %s: %s was already delivered; redelivery suppressed", name, key)
            self.produce(self.topics.deliveries, message.event_id,
                      self._delivery(message, name, 0, "duplicate-suppressed"), ticket)
            return None

        async def on_attempt(m: ActionMessage, attempt: int, outcome: Outcome) -> None:
            metrics.observe_attempt(name, outcome)
            self.produce(self.topics.deliveries, m.event_id, self._delivery(
                m, name, attempt, "delivered" if outcome.delivered else "failed", outcome.status, outcome.error,
                round(outcome.latency * 1000, 3)), ticket)

        done = self._delivering[(name, key)] = asyncio.Event()
        action = self.actions[name]  # a reload may replace it meanwhile: this delivery keeps its own
        self._in_use[action] = self._in_use.get(action, 0) + 1
        try:
            outcome = await deliver(action, message, RetryPolicy.of(action.config), on_attempt=on_attempt)
            if outcome.delivered:
                delivered.mark(partition, key)
        finally:
            del self._delivering[(name, key)]
            done.set()
            self._release(action)
        metrics.observe_delivery(name, outcome, message.received_at)
        if outcome.delivered:
            if outcome.rejected:  # a partial delivery: its refused parts are dead letters before the key is
                await self.dead_letter_parts(name, ticket, message, outcome)
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

    async def dead_letter_parts(self, name: str, ticket: Ticket, message: ActionMessage, outcome: Outcome) -> None:
        """One dead letter per part a partial delivery's peer refused (actions.runner), each acknowledged
        by the broker before the message's delivered key is written: a crash in between
        redelivers the message rather than losing a refused part. ``original`` is the message of
        that part alone, so a redrive re-sends just it."""
        for part in outcome.rejected:
            record = _dead_letter_record(name, ticket, part.error, part.error_type, message.event_id,
                                         orjson.loads(part.message.to_json()), outcome)
            await self.io.produce_acked(self.topics.dlq(name), message.event_id, record.to_json(), ticket)
            metrics.inc(metrics.dead_letters, name)
        log.warning("action %s: event %s delivered except %d part(s), dead-lettered: %s", name, message.event_id,
                    len(outcome.rejected), "; ".join(p.error for p in outcome.rejected[:5]))

    # -- action stages and instances ----------------------------------------------------------
    def _set_loops(self, name: str, target: int) -> None:
        """Run ``target`` stage loops of action ``name``: start more, or stop the surplus once each
        finishes its current delivery (a ``None`` in the queue stops one loop)."""
        current = self._target_loops.get(name, 0)
        for i in range(current, target):
            self._tasks.append(asyncio.create_task(self._action_loop(name), name=f"action-{name}-{i}"))
        for _ in range(target, current):
            self._action_queues[name].put_nowait(None)
        self._target_loops[name] = target

    def _release(self, action: AnyAction) -> None:
        self._in_use[action] -= 1
        if not self._in_use[action]:
            del self._in_use[action]
            if action in self._replaced:  # a reload replaced it while it delivered: close it now
                self._replaced.remove(action)
                self._tasks.append(asyncio.create_task(self._close_action(action), name=f"close-{action.name}"))

    def _retire_instance(self, action: AnyAction) -> None:
        """Close ``action`` (replaced by a reload) once no delivery uses it any more."""
        if self._in_use.get(action):
            self._replaced.append(action)
        else:
            self._tasks.append(asyncio.create_task(self._close_action(action), name=f"close-{action.name}"))

    @staticmethod
    async def _close_action(action: AnyAction) -> None:
        try:
            await action.close()
        except Exception as exc:  # noqa: BLE001 - a failing close must not stop the worker
            log.warning("action %s did not close cleanly: %s", action.name, exc)

    # -- reload -------------------------------------------------------------------------------
    def _on_sighup(self) -> None:
        self._tasks.append(asyncio.create_task(self.reload("SIGHUP"), name="reload"))

    def _restart_only(self, new: Config) -> str | None:
        for key in RESTART_ONLY:
            before, after = getattr(self.config.herald, key), getattr(new.herald, key)
            if before != after:
                shown = "" if key == "kafka" else f" from {before!r} to {after!r}"
                return (f"herald.{key.replace('_', '-')}: changed{shown}; this setting takes effect only "
                        "when the worker restarts")
        return None

    def readiness(self) -> tuple[bool, str]:
        """Whether the worker consumes and Kafka answers (called on an executor thread)."""
        if self.io.fatal:
            return False, "the worker is stopping after a Kafka error"
        if self.io.stopped is None or self.io.stopped.done():
            return False, "the worker is not consuming"
        if not self.joined:
            return False, "the worker has not joined its consumer group yet"
        try:
            md = self.io.producer.list_topics(self.topics.events, timeout=3)
        except KafkaException:
            return False, "Kafka is not reachable"
        topic = md.topics.get(self.topics.events)
        if not md.brokers or topic is None or topic.error is not None:
            return False, "Kafka is not reachable"
        return True, ""

    async def reload(self, source: str) -> ReloadResult:
        """Re-read config, templates and filters, validate them, and apply them from the next event.

        Validation builds a new router the way startup does: a config error, a Rego filter that
        does not compile, a template that cannot load, an action whose settings are wrong, or a
        change to a setting that needs a restart refuses the reload; the running config stays.
        Applying is one step on the event loop between two events: each event is routed entirely
        by the old config or entirely by the new one, and its decision record carries that
        config's hash. Messages already on action topics are delivered by their action's current
        settings; a removed action keeps its stage, with its last settings, until its topic is
        drained (``_drain_retired``), so nothing routed to it is dropped."""
        async with self._reload_lock:
            previous = self.config_hash
            loop = asyncio.get_running_loop()
            try:
                new = await loop.run_in_executor(None, self.reload_source)
                problem = self._restart_only(new) or admin_exposure_problem(new)
                if problem:
                    raise ConfigError(problem)
                # on this thread: embedded Rego engines are used only where they were created
                router = Router(new)
                if router.errors:
                    raise ConfigError("; ".join(router.errors))
                added = [n for n in new.actions if n not in self.actions]
                changed = [n for n in new.actions if n in self.actions
                           and (n in self.retired or self.actions[n].config != new.actions[n])]
                instances = {n: action_class(new.actions[n].type)(new.actions[n]) for n in added + changed}
                if added:  # their topics exist before the router can send to them
                    await loop.run_in_executor(None, ensure_worker_topics, self, new)
            except HeraldError as exc:
                log.error("config reload (%s) refused, config %s stays: %s", source, previous, exc)
                return ReloadResult(False, previous_hash=previous, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - a bad file must never stop the worker
                log.error("config reload (%s) refused, config %s stays: %s: %s", source, previous,
                          type(exc).__name__, exc)
                return ReloadResult(False, previous_hash=previous, error=f"{type(exc).__name__}: {exc}")
            started: list[AnyAction] = []
            try:
                for action in instances.values():
                    await action.start()
                    started.append(action)
            except Exception as exc:  # noqa: BLE001
                for action in started:
                    await self._close_action(action)
                log.error("config reload (%s) refused, config %s stays: action %s cannot start: %s", source,
                          previous, action.name, exc)
                return ReloadResult(False, previous_hash=previous, error=f"action {action.name}: {exc}")
            return self._apply(new, router, instances, added, changed, source, previous)

    def _apply(self, new: Config, router: Router, instances: dict[str, AnyAction],
               added: list[str], changed: list[str], source: str, previous: str) -> ReloadResult:
        """Switch to ``new`` (no await: no event is routed half by the old config)."""
        removed = [n for n in self.config.actions if n not in new.actions]
        for name in added:
            topic = self.action_topics[name] = self.topics.action(name)
            self.stage_of_topic[topic] = name
            self.delivered[name] = DeliveredKeys(self.kafka_conf, self.topics.delivered(name))
            self._action_queues[name] = asyncio.Queue()
        for name, action in instances.items():
            old = self.actions.get(name)
            self.actions[name] = action
            self.retired.pop(name, None)
            if old is not None:
                self._retire_instance(old)
        for name in removed:
            self.retired[name] = time.time()
        self.config = new
        self.router = router
        self.route_templates = {name: r.template for name, r in new.routes.items()}
        self.config_hash = config_hash(new)
        self.state.refresh()
        for name, cfg in new.actions.items():
            self._set_loops(name, cfg.concurrency)
        if added:
            self.io.subscribe(self.input_topics())
        init = getattr(metrics, "init_worker", None)
        if init is not None:
            init(new.routes, new.actions)
        self.reloads += 1
        changes = {"actions_added": added, "actions_changed": changed, "actions_removed": removed}
        for warning in new.warnings:
            log.warning("config: %s", warning)
        log.info("config reloaded (%s): hash %s -> %s; %d routes, %d actions; added %s, changed %s, removed %s%s",
                 source, previous, self.config_hash, len(new.routes), len(new.actions), added or "none",
                 changed or "none", removed or "none",
                 " (their stages deliver what is already on their topics, then stop)" if removed else "")
        return ReloadResult(True, config_hash=self.config_hash, previous_hash=previous, changes=changes)

    async def _drain_retired(self) -> None:
        """Stop the stage of each action a reload removed once its topic holds nothing undelivered
        (the group's committed offsets reached the end of every partition)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(DRAIN_CHECK_S)
            for name in list(self.retired):
                topic = self.action_topics[name]
                try:
                    remaining = await loop.run_in_executor(None, self._undelivered, topic)
                except Exception as exc:  # noqa: BLE001 - checked again at the next interval
                    log.debug("cannot tell whether %s is drained yet: %s", topic, exc)
                    continue
                if name not in self.retired:  # a reload added it back meanwhile
                    continue
                if remaining or not self._action_queues[name].empty() or any(
                        a.name == name for a in self._in_use):
                    continue
                self._stop_stage(name)

    def _undelivered(self, topic: str, consumed_only: bool = False) -> int:
        """Messages of ``topic`` past the group's committed offsets (blocking); with ``consumed_only``,
        0 for a topic this group never committed an offset of."""
        from confluent_kafka import Consumer, TopicPartition

        consumer = Consumer(consumer_config(self.kafka_conf, self.config.herald.consumer_group))
        try:
            md = consumer.list_topics(topic, timeout=5)
            parts = sorted(md.topics[topic].partitions) if topic in md.topics else []
            committed = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=5)
            if consumed_only and all(tp.offset < 0 for tp in committed):
                return 0
            remaining = 0
            for tp in committed:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=5)
                remaining += max(0, high - (tp.offset if tp.offset >= 0 else low))
            return remaining
        finally:
            consumer.close()

    async def _warn_stranded(self) -> None:
        """At start: say which action topics of this prefix still hold undelivered messages of an
        action that is not in the config (removed, then the worker restarted before they drained)."""
        loop = asyncio.get_running_loop()

        def stranded() -> list[tuple[str, int]]:
            prefix = self.topics.action("")
            names = kafka_admin(self.kafka_conf).list_topics(timeout=10).topics
            mine = set(self.action_topics.values())
            found = []
            for topic in sorted(t for t in names if t.startswith(prefix) and t not in mine):
                left = self._undelivered(topic, consumed_only=True)  # another group's actions: not ours
                if left:
                    found.append((topic, left))
            return found

        try:
            for topic, left in await loop.run_in_executor(None, stranded):
                log.warning("%s holds %d undelivered message(s) of an action that is not in the config; a config "
                            "with that action delivers them", topic, left)
        except Exception as exc:  # noqa: BLE001 - a hint only
            log.debug("cannot look for stranded action topics: %s", exc)

    def _stop_stage(self, name: str) -> None:
        since = self.retired.pop(name)
        topic = self.action_topics.pop(name)
        self.stage_of_topic.pop(topic, None)
        self.io.subscribe(self.input_topics())
        self._set_loops(name, 0)
        action = self.actions.pop(name)
        self._retire_instance(action)
        self.delivered.pop(name, None)
        self._target_loops.pop(name, None)
        log.info("action %s (removed by a reload %.0fs ago): %s is drained; its stage stopped", name,
                 time.time() - since, topic)

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal Kafka error; returns the process exit code.
        SIGHUP reloads the config (``reload``)."""
        loop = asyncio.get_running_loop()
        if self.config.herald.admin_listen:  # first: a port in use stops the worker before it consumes
            self.admin = Admin(self)
            await self.admin.start(self.config.herald.admin_listen)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.io.stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        for action in self.actions.values():
            await action.start()
        self._tasks.append(asyncio.create_task(self._router_loop(), name="router"))
        self._tasks.append(asyncio.create_task(self._state_loop(), name="route-state"))
        for name, cfg in self.config.actions.items():
            self._set_loops(name, cfg.concurrency)
        self._tasks += self.state.background_tasks()
        self._tasks.append(asyncio.create_task(self._drain_retired(), name="retired-actions"))
        self._tasks.append(asyncio.create_task(self._warn_stranded(), name="stranded-topics"))
        log.info("config %s: %d routes, %d actions (hash %s)", self.config.path, len(self.config.routes),
                 len(self.config.actions), self.config_hash)
        self.io.start()
        assert self.io.stopped is not None
        await self.io.stopped
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.admin is not None:
            await self.admin.stop()
        for action in [*self.actions.values(), *self._replaced]:
            await self._close_action(action)
        if self.io.fatal:
            log.error("worker stopped: %s", self.io.fatal)
            return 1
        log.info("worker stopped")
        return 0


def _dead_letter_record(stage: str, ticket: Ticket, error: str, error_type: str, event_id: str, original: Any,
                        outcome: Outcome | None, attempts: int = 0) -> DeadLetter:
    """The one way the worker builds a dead letter: where the message came from, and the attempts
    of its delivery (``outcome``), or ``attempts`` at this moment when it never reached an action."""
    now = time.time()
    return DeadLetter(
        stage=stage, error=error, error_type=error_type, attempts=outcome.attempts if outcome else attempts,
        first_attempt_at=outcome.first_attempt_at if outcome else now,
        last_attempt_at=outcome.last_attempt_at if outcome else now,
        source_topic=ticket.topic, source_partition=ticket.partition, source_offset=ticket.offset,
        event_id=event_id, status=outcome.status if outcome else None, original=original,
    )


def ensure_worker_topics(worker: Worker, config: Config | None = None) -> None:
    """Create the topics of ``config`` (default: the worker's) and wait until each one it reads or
    writes can be written (``wait_topics``: a leader with the partition's log for every partition).
    Write-only topics too: records produced to a partition whose log the leader has not created yet
    can be reported delivered and never written (see ``wait_topics``)."""
    config = config or worker.config
    s = config.herald
    retention = {"retention.ms": str(int(RETENTION_S * 1000))}
    configs = {worker.topics.delivered(n): retention for n in config.actions}
    configs[worker.topics.route_state_changelog] = {"cleanup.policy": "compact"}
    names = worker.topics.all_for(list(config.actions))
    ensure_topics(worker.kafka_conf, names, s.partitions, s.replication_factor, configs=configs,
                  max_message_bytes=SizeLimits(s.body_limit).per_topic(worker.topics, names), body_limit=s.body_limit)
    wait_topics(worker.kafka_conf, names)


def run_worker(config: Config, reload_source: Callable[[], Config] | None = None) -> int:
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until run() handles it: an early SIGHUP must not kill

    async def main() -> int:
        worker = Worker(config, reload_source=reload_source)
        ensure_worker_topics(worker)
        wait_topics(worker.kafka_conf, worker.input_topics())
        return await worker.run()

    return asyncio.run(main())
