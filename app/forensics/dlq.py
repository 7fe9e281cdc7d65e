"""Dead-letter tooling: ``herald dlq list|show|redrive|purge``.

A dead letter's id is ``<action>:<partition>:<offset>`` (its place in ``<prefix>dlq.<action>``).
Redrive re-produces the original action message to the action's topic with ``redrive`` counted
up; the action agent's delivered-keys check makes a message that was delivered meanwhile (or
redriven twice) a no-op, so every dead letter is delivered at most once more.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from app.config.loader import Config
from app.errors import HeraldError, PolicyError
from app.kafka.client import client_config, consumer_config, make_admin, producer_config
from app.kafka.window import WindowReader
from app.routing.policy.engine import EmbeddedEngine
from app.kafka.topics import SizeLimits, Topics


@dataclass
class DeadLetterRecord:
    id: str
    action: str
    record: dict[str, Any]


def _consumer(kafka: dict[str, Any]) -> Consumer:
    return Consumer(consumer_config(kafka, f"herald-dlq-{uuid.uuid4().hex}", **{"enable.partition.eof": False}))


class DeadLetters:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.kafka = client_config(config.herald)
        self.topics = Topics(config.herald.topic_prefix)

    def stages(self, action: str | None = None) -> list[str]:
        if action is None:
            return list(self.config.actions) + ["router"]
        if action != "router" and action not in self.config.actions:
            raise HeraldError(f"unknown action {action!r}; enabled actions: {', '.join(self.config.actions)}")
        return [action]

    def _topic(self, stage: str) -> str:
        return self.topics.router_dlq if stage == "router" else self.topics.dlq(stage)

    def read(self, stage: str, since_s: float | None = None) -> Iterator[DeadLetterRecord]:
        for rec in WindowReader(self.kafka, self._topic(stage), None, None):
            record = orjson.loads(rec.value)
            if since_s is not None and record.get("last_attempt_at", 0) < since_s:
                continue
            yield DeadLetterRecord(f"{stage}:{rec.partition}:{rec.offset}", stage, record)

    def summary(self, action: str | None = None) -> dict[str, Any]:
        """Counts per action and per reason (error type and status)."""
        out: dict[str, Any] = {}
        for stage in self.stages(action):
            reasons: Counter[str] = Counter()
            for dl in self.read(stage):
                status = dl.record.get("status")
                reasons[f"{dl.record.get('error_type', '?')}" + (f" HTTP {status}" if status else "")] += 1
            out[stage] = {"total": sum(reasons.values()), "reasons": dict(reasons)}
        return out

    def show(self, dead_letter_id: str) -> dict[str, Any]:
        try:
            stage, part, off = dead_letter_id.rsplit(":", 2)
            partition, offset = int(part), int(off)
        except ValueError:
            raise HeraldError(f"dead-letter id must look like ACTION:PARTITION:OFFSET, got {dead_letter_id!r}") from None
        topic = self._topic(self.stages(stage)[0])
        consumer = _consumer(self.kafka)
        try:
            consumer.assign([TopicPartition(topic, partition, offset)])
            msgs = consumer.consume(1, timeout=10)
        finally:
            consumer.close()
        if not msgs or msgs[0].error() is not None or msgs[0].offset() != offset:
            raise HeraldError(f"no dead letter {dead_letter_id} (purged, or never written)")
        value = msgs[0].value()
        if value is None:  # Herald never writes one; a tombstone written by hand
            raise HeraldError(f"dead letter {dead_letter_id} has no value")
        return {"id": dead_letter_id, **orjson.loads(value)}

    def redrive(self, action: str, where: str = "", since_s: float | None = None) -> dict[str, int]:
        """Send matching dead letters of ``action`` back to its topic."""
        if action == "router" or action not in self.config.actions:
            raise HeraldError(f"redrive needs an enabled action name, got {action!r}")
        engine = None
        if where:
            engine = EmbeddedEngine()
            try:
                engine.add_module("--filter", f"package herald.redrive\n\ndefault allow = false\n\nallow {{\n{where}\n}}\n")
            except PolicyError as exc:
                raise HeraldError(f"--filter does not compile: {exc}") from None
        # a dead letter's original is an action message: as large as the worker's (app.kafka.topics.SizeLimits)
        producer = Producer(producer_config(
            self.kafka, **{"message.max.bytes": SizeLimits(self.config.herald.body_limit).pipeline}))
        counts = {"redriven": 0, "skipped": 0}
        for dl in self.read(action, since_s):
            original = dl.record.get("original")
            if not isinstance(original, dict) or "content" not in original:
                counts["skipped"] += 1
                continue
            if engine is not None:
                engine.set_input_json(orjson.dumps(dl.record).decode())
                if engine.eval_path("data.herald.redrive.allow") is not True:
                    counts["skipped"] += 1
                    continue
            original["redrive"] = int(original.get("redrive", 0)) + 1
            original["redriven_at"] = time.time()
            producer.produce(self.topics.action(action), key=str(original["event_id"]).encode(),
                             value=orjson.dumps(original))
            counts["redriven"] += 1
            producer.poll(0)
        if producer.flush(30) != 0:
            raise HeraldError("Kafka did not acknowledge every redriven message; run redrive again")
        return counts

    def purge(self, action: str | None = None) -> dict[str, int]:
        """Delete every dead letter of ``action`` (or all) up to now."""
        admin = make_admin(self.kafka)
        consumer = _consumer(self.kafka)
        purged: dict[str, int] = {}
        try:
            for stage in self.stages(action):
                topic = self._topic(stage)
                md = consumer.list_topics(topic, timeout=10)
                if topic not in md.topics:
                    continue
                targets, total = [], 0
                for p in md.topics[topic].partitions:
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
                    if high > low:
                        targets.append(TopicPartition(topic, p, high))
                        total += high - low
                if targets:
                    for fut in admin.delete_records(targets).values():
                        fut.result(30)
                purged[stage] = total
        finally:
            consumer.close()
        return purged
