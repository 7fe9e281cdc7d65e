"""Recently delivered idempotency keys, per action and partition, durable in Kafka.

After each successful delivery the worker writes the message's idempotency key to
``<prefix>delivered.<action>`` (same partition as the action topic's), immediately rather than at
the next offset commit. When a worker is assigned an action partition (after a crash or a
rebalance) it reads that partition's recent keys back, so the messages it must reprocess but that
were already delivered are suppressed instead of sent twice.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition

log = logging.getLogger("herald.delivered")

RETENTION_S = 3600.0
# Redeliveries follow a crash or rebalance within seconds to minutes; 50,000 keys per partition
# (~10 MB) cover that at thousands of events per second.
MAX_KEYS_PER_PARTITION = 50_000


class DeliveredKeys:
    def __init__(self, bootstrap: str, topic: str, retention_s: float = RETENTION_S,
                 max_keys: int = MAX_KEYS_PER_PARTITION) -> None:
        self.bootstrap = bootstrap
        self.max_keys = max_keys
        self.topic = topic
        self.retention_s = retention_s
        self._keys: dict[int, dict[str, float]] = {}
        self.loaded: set[int] = set()  # partitions read back since this worker got them
        self.suppressed = 0

    def seen(self, partition: int, key: str) -> bool:
        return key in self._keys.get(partition, {})

    def mark(self, partition: int, key: str, now: float | None = None) -> None:
        keys = self._keys.setdefault(partition, {})
        keys[key] = now or time.time()
        if len(keys) > self.max_keys:  # bounded memory: forget the oldest (insertion order)
            for old in list(itertools.islice(keys, len(keys) - self.max_keys)):
                del keys[old]
        elif len(keys) % 10000 == 0:
            self.prune(partition)

    def prune(self, partition: int) -> None:
        cutoff = time.time() - self.retention_s
        keys = self._keys.get(partition, {})
        for key in [k for k, t in keys.items() if t < cutoff]:
            del keys[key]

    def load(self, partitions: list[int], timeout: float = 30.0) -> int:
        """Read the recent keys of ``partitions`` (blocking; run it in an executor)."""
        if not partitions:
            return 0
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"herald-delivered-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "enable.partition.eof": False})
        loaded = 0
        try:
            since_ms = int((time.time() - self.retention_s) * 1000)
            starts = consumer.offsets_for_times([TopicPartition(self.topic, p, since_ms) for p in partitions], timeout)
            for tp in starts:
                _, high = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=timeout)
                start = tp.offset if tp.offset >= 0 else high
                keys = self._keys.setdefault(tp.partition, {})
                if start >= high:
                    continue
                consumer.assign([TopicPartition(self.topic, tp.partition, start)])
                position = start
                deadline = time.time() + timeout
                while position < high and time.time() < deadline:
                    for m in consumer.consume(1000, timeout=1.0):
                        if m.error() is not None:
                            continue
                        position = m.offset() + 1
                        if m.key():
                            keys[m.key().decode()] = (m.timestamp()[1] or 0) / 1000
                            loaded += 1
        except KafkaException as exc:
            log.warning("could not load delivered keys of %s: %s", self.topic, exc)
        finally:
            consumer.close()
        self.loaded.update(partitions)
        return loaded
