"""What the console shows, read from Herald's topics as they grow.

One background thread reads ``<prefix>events`` from ``herald.console.recent`` records before each
partition's end, then tails it together with ``decisions``, ``deliveries``, ``action.*`` and
``dlq.*`` (read from their beginning; a consumer group of its own, nothing committed), joining
the records per event id. The last ``recent`` events are kept in memory with their decision,
rendered contents, delivery attempts and dead letters; older ones leave memory (their records stay
on the topics: ``herald timeline`` and ``herald dlq`` read them). The Stats page counts events per
minute from the events topic's offsets and delivery attempts from the deliveries records.
Listeners (the SSE streams) hear about every change.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from app.forensics.entities import entity_extractor
from app.forensics.timeline import Stats, make_row
from app.kafka.client import consumer_config
from app.kafka.topics import Topics
from app.kafka.window import Record

log = logging.getLogger("herald.console")

_ENTITY = [entity_extractor(by) for by in ("image", "pod", "host", "container")]


def entity_of(event: dict[str, Any]) -> str:
    for extract in _ENTITY:
        value = extract(event)
        if value:
            return value
    return ""


@dataclass
class Story:
    """Everything known about one event."""

    event_id: str
    row: dict[str, Any] | None = None  # the timeline row (event included) once the event was read
    decisions: list[dict[str, Any]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)  # action messages (rendered content)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[dict[str, Any]] = field(default_factory=list)
    seq: int = 0
    cached: dict[str, Any] | None = None  # summary() as of the last change

    @property
    def decision(self) -> dict[str, Any] | None:
        routed = [d for d in self.decisions if "routes" in d]
        return routed[-1] if routed else None

    def outcomes(self) -> dict[str, str]:
        """action -> delivered (once any attempt delivered, a redrive included), else dead-lettered,
        else the latest attempt's outcome (failed, duplicate-suppressed), else pending."""
        out: dict[str, str] = {}
        decision = self.decision
        for planned in (decision or {}).get("actions") or []:
            out[str(planned.get("action"))] = "pending"
        delivered = set()
        for d in self.deliveries:
            action = str(d.get("action"))
            out[action] = str(d.get("outcome"))
            if d.get("outcome") == "delivered":
                delivered.add(action)
        for dl in self.dead_letters:
            action = str(dl.get("stage"))
            if action != "router":
                out[action] = "dead-lettered"
        for action in delivered:
            out[action] = "delivered"
        return out

    def summary(self) -> dict[str, Any]:
        row = self.row or {}
        decision = self.decision or {}
        routes = decision.get("routes") or {}
        outcomes = self.outcomes()
        if not decision:
            overall = "dead-lettered" if self.dead_letters else "routing"
        elif not outcomes:
            overall = "no route" if not self.dead_letters else "dead-lettered"
        elif "dead-lettered" in outcomes.values():
            overall = "dead-lettered"
        elif "failed" in outcomes.values() or "pending" in outcomes.values():
            overall = "pending"
        else:
            overall = "delivered"
        return {
            "event_id": self.event_id,
            "time": row.get("kafka_time", ""),
            "time_ns": row.get("kafka_time_ns", 0),
            "source": row.get("source", ""),
            "entity": row.get("entity", ""),
            "severity": row.get("severity", "unknown"),
            "title": row.get("title", ""),
            "routes": sorted(n for n, v in routes.items() if isinstance(v, dict) and v.get("matched")),
            "outcomes": outcomes,
            "outcome": overall,
        }


def matches(summary: dict[str, Any], route: str = "", action: str = "", outcome: str = "",
            window_s: float = 0, now: float | None = None) -> bool:
    """The live page's filters."""
    if route and route not in summary["routes"]:
        return False
    if action and action not in summary["outcomes"]:
        return False
    if outcome:
        values = [summary["outcomes"][action]] if action else [summary["outcome"], *summary["outcomes"].values()]
        if outcome not in values:
            return False
    oldest = (time.time() if now is None else now) - window_s
    return window_s <= 0 or summary["time_ns"] / 1e9 >= oldest


class Store:
    def __init__(self, kafka: dict[str, Any], topics: Topics, recent: int = 5000) -> None:
        self.kafka = kafka
        self.topics = topics
        self.recent = recent
        self.stories: OrderedDict[str, Story] = OrderedDict()  # events read, with what Herald did
        self.pending: OrderedDict[str, Story] = OrderedDict()  # records whose event was not read
        self.lock = threading.Lock()
        self.listeners: list[Callable[[dict[str, Any]], None]] = []
        self.delivery_rates: Counter[tuple[str, str, int]] = Counter()  # (action, outcome, minute) -> attempts
        self.read = 0
        self._seq = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.caught_up = threading.Event()
        self._event_partitions = 0
        self.error = ""

    # -- reading -------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="console-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _consumer(self, **overrides: Any) -> Consumer:
        return Consumer(consumer_config(self.kafka, f"herald-console-{uuid.uuid4().hex}", **{
            "topic.metadata.refresh.interval.ms": 2000, "enable.partition.eof": True,
            "fetch.max.bytes": 16 * 1024 * 1024, **overrides}))

    def _events_consumer(self) -> Consumer:
        """The events topic from ``recent`` records before each partition's end (the older ones
        would leave memory anyway), or the whole topic once it exists."""
        consumer = self._consumer()
        topic = self.topics.events
        md = consumer.list_topics(topic, timeout=10)
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            consumer.subscribe([topic])
            return consumer
        starts = []
        for p in meta.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            starts.append(TopicPartition(topic, p, max(low, high - self.recent)))
        consumer.assign(starts)
        self._event_partitions = len(starts)
        return consumer

    def _drain(self, consumer: Consumer, eof: set[tuple[str, int]] | None = None) -> int:
        msgs = consumer.consume(500, timeout=0.1)
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if eof is not None:
                        eof.add((msg.topic() or "", msg.partition() or 0))
                else:
                    self.error = str(err)
                continue
            try:
                headers: dict[str, Any] = {str(h[0]): h[1] for h in (msg.headers() or [])}
                self.add(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.timestamp()[1],
                         headers, msg.key(), msg.value() or b"")
            except Exception as exc:  # a record the console cannot read must not stop the tail
                log.warning("console: skipped %s[%s]@%s: %s: %s", msg.topic(), msg.partition(),
                            msg.offset(), type(exc).__name__, exc)
        return len(msgs)

    def _run(self) -> None:
        """Events first (up to their end), so that the other topics' records find their event;
        then every topic, as they grow."""
        events = self._events_consumer()
        prefix = re.escape(self.topics.prefix)
        others = self._consumer()
        others.subscribe([f"^{prefix}(decisions|deliveries|action\\..+|dlq\\..+)$"])
        try:
            eof: set[tuple[str, int]] = set()
            deadline = time.monotonic() + 120
            while (not self._stop.is_set() and self._event_partitions and len(eof) < self._event_partitions
                   and time.monotonic() < deadline):
                self._drain(events, eof)
            seen_end: set[tuple[str, int]] = set()
            while not self._stop.is_set():
                self._drain(events)
                self._drain(others, seen_end)
                if not self.caught_up.is_set():  # every partition of the other topics read to its end once
                    assigned = {(tp.topic, tp.partition) for tp in others.assignment()}
                    if assigned and assigned <= seen_end:
                        self.caught_up.set()
        finally:
            events.close()
            others.close()

    def add(self, topic: str, partition: int, offset: int, ts_ms: int, headers: dict[str, Any],
            key: bytes | None, value: bytes) -> None:
        """One record of any tailed topic."""
        self.read += 1
        t = self.topics
        if topic == t.events:
            rec = Record(topic, partition, offset, ts_ms, {k: v.decode("utf-8", "replace") if isinstance(v, bytes)
                                                           else str(v) for k, v in headers.items()}, key, value)
            row = make_row(rec, entity_of, None, Stats())
            if row is None:
                return
            self._update(row["event_id"], lambda s: setattr(s, "row", row))
            return
        body = orjson.loads(value)
        if not isinstance(body, dict):
            return
        event_id = str(body.get("event_id") or (key or b"").decode("utf-8", "replace"))
        if not event_id:
            return
        if topic == t.decisions:
            self._update(event_id, lambda s: s.decisions.append(body))
        elif topic == t.deliveries:
            minute = int(float(body.get("time") or ts_ms / 1000) // 60)
            self.delivery_rates[(str(body.get("action")), str(body.get("outcome")), minute)] += 1
            self._update(event_id, lambda s: s.deliveries.append(body))
        elif topic.startswith(t.prefix + "action."):
            body.pop("event", None)  # the raw event is shown once, from the events topic
            body["offset"] = f"{partition}:{offset}"
            self._update(event_id, lambda s: s.messages.append(body))
        elif topic.startswith(t.prefix + "dlq."):
            stage = topic.removeprefix(t.prefix + "dlq.")
            record = {k: v for k, v in body.items() if k != "original"}
            record["id"] = f"{stage}:{partition}:{offset}"
            record.setdefault("stage", stage)
            self._update(event_id, lambda s: s.dead_letters.append(record))

    def _update(self, event_id: str, change: Callable[[Story], None]) -> None:
        """Apply ``change`` to the event's story. Stories with their event are kept for the last
        ``recent`` events read; records of an event not read (yet) wait in ``pending`` (bounded too)."""
        with self.lock:
            story = self.stories.get(event_id)
            if story is None:
                story = self.pending.get(event_id)
                if story is None:
                    story = self.pending[event_id] = Story(event_id)
                    while len(self.pending) > 4 * self.recent:
                        self.pending.popitem(last=False)
            change(story)
            if story.row is not None and event_id not in self.stories:
                self.pending.pop(event_id, None)
                self.stories[event_id] = story
                while len(self.stories) > self.recent:
                    self.stories.popitem(last=False)
            self._seq += 1
            story.seq = self._seq
            summary = story.cached = story.summary() if story.row is not None else None
            listeners = list(self.listeners)
        if summary is not None:
            for listener in listeners:
                listener(summary)

    # -- queries -------------------------------------------------------------------------------
    def story(self, event_id: str) -> Story | None:
        with self.lock:
            return self.stories.get(event_id) or self.pending.get(event_id)

    def latest(self, limit: int = 200, **filters: Any) -> list[dict[str, Any]]:
        """Summaries of the newest events (by Kafka time) that pass ``filters`` (see ``matches``)."""
        with self.lock:
            summaries = [s.cached or s.summary() for s in self.stories.values() if s.row is not None]
        summaries.sort(key=lambda s: (s["time_ns"], s["event_id"]), reverse=True)
        out = []
        for s in summaries:
            if matches(s, **filters):
                out.append(s)
                if len(out) >= limit:
                    break
        return out

    def intake_counts(self, minutes: list[int]) -> list[int]:
        """Events per minute from the events topic's offsets by time (exact, whether or not the
        console read those events)."""
        consumer = self._consumer()
        topic = self.topics.events
        try:
            meta = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None:
                return [0] * len(minutes)
            parts = list(meta.partitions)
            ends = [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts]
            bounds = []
            for m in [*minutes, minutes[-1] + 1]:
                found = consumer.offsets_for_times([TopicPartition(topic, p, m * 60000) for p in parts], timeout=10)
                bounds.append([tp.offset if tp.offset >= 0 else end for tp, end in zip(found, ends, strict=True)])
            return [sum(b - a for a, b in zip(bounds[i], bounds[i + 1], strict=True)) for i in range(len(minutes))]
        finally:
            consumer.close()

    def rates(self, now: float | None = None) -> dict[str, Any]:
        """Per minute over the last hour: events in (from the events topic's offsets), and delivery
        attempts per action and outcome (from the deliveries records read)."""
        minute = int((time.time() if now is None else now) // 60)
        minutes = list(range(minute - 59, minute + 1))
        intake = self.intake_counts(minutes)
        with self.lock:
            for key in [k for k in self.delivery_rates if k[2] < minutes[0]]:  # older than an hour: not kept
                del self.delivery_rates[key]
            per: dict[str, dict[str, list[int]]] = {}
            for (action, outcome, m), n in self.delivery_rates.items():
                if minutes[0] <= m <= minute:
                    per.setdefault(action, {}).setdefault(outcome, [0] * 60)[m - minutes[0]] += n
        return {"minutes": minutes, "intake": intake, "deliveries": per, "records_read": self.read,
                "caught_up": self.caught_up.is_set()}
