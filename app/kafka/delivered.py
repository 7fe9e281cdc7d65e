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
from collections.abc import Mapping
from typing import Any

from app.errors import KafkaUnavailableError
from app.kafka.window import WindowReader

log = logging.getLogger("herald.delivered")

RETENTION_S = 3600.0
# Redeliveries follow a crash or rebalance within seconds to minutes; 50,000 keys per partition
# (~10 MB) cover that at thousands of events per second.
MAX_KEYS_PER_PARTITION = 50_000


class DeliveredKeys:
    def __init__(self, conf: Mapping[str, Any] | str, topic: str, retention_s: float = RETENTION_S,
                 max_keys: int = MAX_KEYS_PER_PARTITION) -> None:
        """``conf``: a client config (``app.kafka.client.client_config(settings)``)."""
        self.conf = conf
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
        if len(keys) > self.max_keys:
            self._trim(keys)
        elif len(keys) % 10000 == 0:
            self.prune(partition)

    def _trim(self, keys: dict[str, float]) -> None:
        """Bounded memory: forget the oldest keys (insertion order) beyond ``max_keys``."""
        for old in list(itertools.islice(keys, max(0, len(keys) - self.max_keys))):
            del keys[old]

    def prune(self, partition: int) -> None:
        cutoff = time.time() - self.retention_s
        keys = self._keys.get(partition, {})
        for key in [k for k, t in keys.items() if t < cutoff]:
            del keys[key]

    def load(self, partitions: list[int], timeout: float = 30.0) -> int:
        """Read the recent keys of ``partitions`` (blocking; run it in an executor).

        If Kafka cannot be read the partitions count as loaded anyway: a redelivery may then not be
        suppressed (a duplicate), which is better than not delivering."""
        if not partitions:
            return 0
        loaded = 0
        since_ms = int((time.time() - self.retention_s) * 1000)
        try:
            for rec in WindowReader(self.conf, self.topic, since_ms, None, timeout, partitions):
                if rec.key:
                    self._keys.setdefault(rec.partition, {})[rec.key.decode()] = rec.timestamp_ms / 1000
                    loaded += 1
        except KafkaUnavailableError as exc:
            log.warning("could not load delivered keys of %s: %s", self.topic, exc)
        for partition in partitions:
            self._trim(self._keys.setdefault(partition, {}))
        self.loaded.update(partitions)
        return loaded
