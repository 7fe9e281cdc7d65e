"""Producers wait until every topic they write can be written (real Kafka broker).

Kafka's metadata can name a partition's leader a moment before that broker has created the
partition's log. An idempotent producer writing then gets NOT_LEADER_OR_FOLLOWER for its first
request while its next one is written; a broker before Kafka 4.5 takes any first sequence from a
producer it has no state for (KAFKA-15591), and librdkafka reports the failed records delivered
("implicitly acked by subsequent batch success"). The worker lost 3 decisions that way in an e2e
run. ``wait_topics`` now waits until every partition's leader answers a ListOffsets, and the worker
waits for every topic it writes, not only for those it reads.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import NewTopic, OffsetSpec

from actions import load_config
from agents.worker import Worker, ensure_worker_topics
from app.kafka.admin import admin, wait_topics
from app.kafka.client import producer_config

PARTITIONS = 3


def worker_producer(bootstrap: str) -> Producer:
    """The worker's producer settings (agents/kafkaio.py): idempotent, acks=all, linger 2 ms, lz4."""
    return Producer(producer_config(bootstrap, **{"linger.ms": 2, "compression.type": "lz4"}))


def produce_and_count(bootstrap: str, topics: list[str], per_partition: int) -> None:
    """Produce ``per_partition`` records to every partition of ``topics`` at once (several requests
    in flight per partition), then assert that every record reported delivered is in the log."""
    producer = worker_producer(bootstrap)
    delivered: dict[tuple[str, int], int] = {}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")
            return
        tp = (str(msg.topic()), int(msg.partition() or 0))
        delivered[tp] = delivered.get(tp, 0) + 1

    for i in range(per_partition):
        for topic in topics:
            for p in range(PARTITIONS):
                producer.produce(topic, b"v%d" % i, b"k%d" % i, partition=p, on_delivery=on_delivery)
        producer.poll(0)
        time.sleep(0.003)  # a new batch every few ms: up to 5 requests in flight per partition
    assert producer.flush(60) == 0, "records still queued 60 s after the last produce"
    assert not errors, errors[:5]
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex[:8]}"})
    try:
        in_log = {(t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                  for t in topics for p in range(PARTITIONS)}
    finally:
        consumer.close()
    want = {(t, p): per_partition for t in topics for p in range(PARTITIONS)}
    assert delivered == want, {tp: n for tp, n in delivered.items() if n != per_partition}
    assert in_log == want, f"acknowledged but not in the log: { {tp: n for tp, n in in_log.items() if n != per_partition} }"


def assert_served(bootstrap: str, topics: list[str]) -> None:
    """Every partition's leader answers a ListOffsets right now (no wait, no retry loop)."""
    client = admin(bootstrap)
    md = client.list_topics(timeout=10)
    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # confluent-kafka: unannotated
    futures = client.list_offsets({TopicPartition(t, p): latest for t in topics for p in md.topics[t].partitions},
                                  request_timeout=2)
    assert len(futures) == len(topics) * PARTITIONS
    for tp, fut in futures.items():
        assert fut.result(5).offset == 0, (tp.topic, tp.partition)


def test_wait_topics_blocks_until_late_topics_are_served_and_nothing_acknowledged_is_lost(kafka: Any) -> None:
    """Topics created 2 s after the wait began: it returns only after, and then every leader serves
    its partitions; records produced at once to 8 fresh topics all land."""
    for rnd in range(3):
        base = f"late-{uuid.uuid4().hex[:8]}"
        names = [f"{base}-{i}" for i in range(8)]
        created: list[float] = []

        def create_late(names: list[str] = names, created: list[float] = created) -> None:
            time.sleep(2.0)
            client = admin(kafka.bootstrap)  # kept referenced until the futures are done
            for fut in client.create_topics([NewTopic(n, PARTITIONS, 1) for n in names]).values():
                fut.result(30)
            created.append(time.monotonic())

        creator = threading.Thread(target=create_late)
        creator.start()
        try:
            wait_topics(kafka.bootstrap, names, timeout=60)
            returned = time.monotonic()
        finally:
            creator.join(60)
        assert created and returned >= created[0] - 0.5, f"round {rnd}: the wait returned before the topics existed"
        assert_served(kafka.bootstrap, names)
        produce_and_count(kafka.bootstrap, names, per_partition=60)


def test_worker_waits_for_the_topics_it_only_writes(kafka: Any, tmp_path: Path) -> None:
    """A worker on a broker without its topics: when ensure_worker_topics returns, every partition
    of decisions, deliveries, the dead-letter, delivered and changelog topics is served, and records
    produced to them at once all land."""
    prefix = f"t{uuid.uuid4().hex[:8]}."
    cfg = {
        "herald": {"topic-prefix": prefix, "kafka-bootstrap-servers": kafka.bootstrap, "partitions": PARTITIONS},
        "routes": [{"name": "all", "actions": ["hook"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/x"}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    worker = Worker(load_config(str(path)))
    t = worker.topics
    write_only = [t.decisions, t.deliveries, t.router_dlq, t.dlq("hook"), t.delivered("hook"), t.route_state_changelog]
    assert not set(write_only) & set(worker.input_topics())
    assert not set(admin(kafka.bootstrap).list_topics(timeout=10).topics) & set(worker.topic_names())
    ensure_worker_topics(worker)
    assert_served(kafka.bootstrap, worker.topic_names())
    produce_and_count(kafka.bootstrap, write_only, per_partition=40)
