"""Read a time window of a topic, as a generator, without a consumer group.

The window is on Kafka's timestamps (the only time Kafka indexes): ``offsets_for_times`` gives
each partition's first offset at or after ``since``, and its first offset after ``until`` (or the
high watermark, read once at the start) ends it, so a read always terminates even while
producers keep writing. Partitions are ``assign()``-ed, nothing is committed, and the consumer's
prefetch queue is capped, so memory does not grow with the size of the window.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import KafkaUnavailableError
from app.kafka.client import bootstrap_of, consumer_config

log = logging.getLogger("herald.kafkawindow")

# librdkafka's prefetch bounds the reader's memory: at most PREFETCH_KIB queued, fetches of at most
# 8 MiB (512 KiB per partition; librdkafka's 1 MiB default cost ~50 MiB more RSS on 200,000 events,
# for no clear gain in speed).
PREFETCH_KIB = 16 * 1024


@dataclass(slots=True)
class Record:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    headers: dict[str, str]
    key: bytes | None
    value: bytes


@dataclass
class PartitionSpan:
    partition: int
    start: int  # first offset to read
    end: int  # first offset NOT to read

    @property
    def count(self) -> int:
        return max(0, self.end - self.start)


def _consumer(conf: Mapping[str, Any] | str) -> Any:
    from confluent_kafka import Consumer

    return Consumer(consumer_config(
        conf,
        f"herald-reader-{uuid.uuid4().hex}",  # required by the client; never joined
        **{
            "enable.auto.offset.store": False,
            "queued.max.messages.kbytes": PREFETCH_KIB,
            "queued.min.messages": 100_000,
            "fetch.max.bytes": 8 * 1024 * 1024,
            "max.partition.fetch.bytes": 512 * 1024,
            "socket.connection.setup.timeout.ms": 5000,
            "logger": logging.getLogger("herald.kafka.client"),
        },
    ))


class WindowReader:
    """Spans of one topic for ``[since_ms, until_ms]`` (``until_ms`` None: up to now).

    ``conf`` is a client config (``app.kafka.client.client_config(settings)``); a bare bootstrap
    string still works (PLAINTEXT) until every caller passes a config."""

    def __init__(self, conf: Mapping[str, Any] | str, topic: str, since_ms: int | None, until_ms: int | None,
                 timeout: float = 15.0, partitions: list[int] | None = None) -> None:
        self.bootstrap = bootstrap_of(conf)
        self.topic = topic
        self.partitions = partitions  # None: all of them
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.timeout = timeout
        self.consumer = _consumer(conf)
        self.spans = self._spans()

    def _spans(self) -> list[PartitionSpan]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            md = self.consumer.list_topics(self.topic, timeout=self.timeout)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read topic metadata from Kafka at {self.bootstrap}: {exc}") from None
        meta = md.topics.get(self.topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return []  # a topic that does not exist has an empty window
        parts = sorted(p for p in meta.partitions if self.partitions is None or p in self.partitions)
        if not parts:
            return []
        try:
            marks = {p: self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=self.timeout)
                     for p in parts}
            starts = self._offsets_at(parts, self.since_ms, marks, low=True)
            ends = self._offsets_at(parts, None if self.until_ms is None else self.until_ms + 1, marks, low=False)
        except KafkaException as exc:
            raise KafkaUnavailableError(f"cannot read offsets of {self.topic} at {self.bootstrap}: {exc}") from None
        return [PartitionSpan(p, starts[p], ends[p]) for p in parts if ends[p] > starts[p]]

    def _offsets_at(self, parts: list[int], ms: int | None, marks: dict[int, tuple[int, int]],
                    low: bool) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        if ms is None:
            return {p: marks[p][0] if low else marks[p][1] for p in parts}
        found = self.consumer.offsets_for_times([TopicPartition(self.topic, p, ms) for p in parts],
                                                timeout=self.timeout)
        # -1: no message at or after that time: the partition's window starts (or ends) at the end
        return {tp.partition: marks[tp.partition][1] if tp.offset < 0 else max(tp.offset, marks[tp.partition][0])
                for tp in found}

    @property
    def total(self) -> int:
        return sum(s.count for s in self.spans)

    def __iter__(self) -> Iterator[Record]:
        return self.records()

    def records(self, on_progress: Callable[[int], None] | None = None) -> Iterator[Record]:
        """Every record of the window, partition order interleaved as Kafka delivers them."""
        from confluent_kafka import KafkaError, TopicPartition

        remaining = {s.partition: s for s in self.spans}
        if not remaining:
            self.close()
            return
        self.consumer.assign([TopicPartition(self.topic, s.partition, s.start) for s in self.spans])
        idle = 0
        done = 0
        try:
            while remaining:
                batch = self.consumer.consume(1000, timeout=1.0)
                if not batch:
                    # transaction markers and compacted gaps take offsets no message carries
                    for tp in self.consumer.position([TopicPartition(self.topic, p) for p in list(remaining)]):
                        if tp.offset >= remaining[tp.partition].end:
                            del remaining[tp.partition]
                    if not remaining:
                        break
                    idle += 1
                    if idle * 1.0 >= self.timeout:
                        raise KafkaUnavailableError(
                            f"no data from {self.topic} for {self.timeout:.0f}s with "
                            f"{sum(s.end - s.start for s in remaining.values())} record(s) still expected"
                        )
                    continue
                idle = 0
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise KafkaUnavailableError(f"reading {self.topic}: {err}")
                    span = remaining.get(msg.partition())
                    if span is None or msg.offset() >= span.end:
                        continue
                    span.start = msg.offset() + 1
                    if span.start >= span.end:
                        del remaining[msg.partition()]
                    _, ts = msg.timestamp()
                    if self.since_ms is not None and ts < self.since_ms:
                        continue  # CreateTime is not monotonic: offsets_for_times is a lower bound only
                    if self.until_ms is not None and ts > self.until_ms:
                        continue
                    headers = {k: (v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v or ""))
                               for k, v in (msg.headers() or [])}
                    yield Record(msg.topic(), msg.partition(), msg.offset(), ts, headers, msg.key(), msg.value() or b"")
                done += len(batch)
                if on_progress is not None:
                    on_progress(done)
        finally:
            self.close()

    def close(self) -> None:
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None


def list_topics(conf: Mapping[str, Any] | str, prefix: str, timeout: float = 10.0) -> list[str]:
    """Topic names that start with ``prefix`` (for dlq.* topics of actions no longer configured)."""
    from confluent_kafka import KafkaException

    consumer = _consumer(conf)
    try:
        md = consumer.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot list topics at {bootstrap_of(conf)}: {exc}") from None
    finally:
        consumer.close()
    return sorted(t for t in md.topics if t.startswith(prefix))
