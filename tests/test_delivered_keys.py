"""The delivered-keys log read back from a real broker, one partition at a time."""

from __future__ import annotations

import time
import uuid
from typing import Any

from confluent_kafka import Producer

from app.kafka.delivered import DeliveredKeys
from app.kafka.admin import ensure_topics


def test_a_new_owner_reads_back_only_its_partitions_recent_keys(kafka: Any) -> None:
    topic = f"t{uuid.uuid4().hex[:8]}.delivered.w1"
    ensure_topics(kafka.client_config(), [topic], 3, 1)
    producer = Producer(kafka.client_config())
    now_ms = int(time.time() * 1000)
    for partition in range(3):
        for n in range(4):
            producer.produce(topic, key=f"e{partition}-{n}:r:w1".encode(), value=b"1", partition=partition,
                             timestamp=now_ms)
    # older than the retention window: not read back
    producer.produce(topic, key=b"old:r:w1", value=b"1", partition=0, timestamp=now_ms - 7_200_000)
    assert producer.flush(10) == 0

    keys = DeliveredKeys(kafka.client_config(), topic, max_keys=3)
    assert keys.load([0, 2]) == 8
    assert keys.loaded == {0, 2}
    # the cap keeps the newest keys of each partition
    assert [keys.seen(0, f"e0-{n}:r:w1") for n in range(4)] == [False, True, True, True]
    assert keys.seen(2, "e2-3:r:w1") and not keys.seen(1, "e1-3:r:w1")
    assert not keys.seen(0, "old:r:w1")


def test_an_unreachable_broker_counts_as_loaded_with_nothing() -> None:
    keys = DeliveredKeys({"bootstrap.servers": "127.0.0.1:1"}, "nowhere", max_keys=3)
    assert keys.load([1], timeout=2) == 0
    assert keys.loaded == {1} and not keys.seen(1, "anything")
