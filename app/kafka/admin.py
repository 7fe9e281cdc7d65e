"""Topic creation and small admin helpers (confluent-kafka AdminClient)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, OffsetSpec, ResourceType

from app.errors import ConfigError, KafkaUnavailableError
from app.kafka.client import bootstrap_of, make_admin

log = logging.getLogger("herald.kafka")


def admin(conf: Mapping[str, Any] | str) -> AdminClient:
    """An AdminClient on a client config (``app.kafka.client.client_config``)."""
    return make_admin(conf)


def ensure_topics(
    conf: Mapping[str, Any] | str, names: list[str], partitions: int, replication: int, timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None, max_message_bytes: Mapping[str, int] | None = None,
    body_limit: int | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    ``conf`` is a client config (``app.kafka.client.client_config(settings)``); a bare bootstrap
    string still works (PLAINTEXT) until every caller passes a config. ``max_message_bytes``: the
    record size each topic must accept (``app.kafka.topics.SizeLimits``): topics created get it as their
    ``max.message.bytes``, topics that exist with less raise ``ConfigError`` naming both values and
    ``herald.body-limit`` (``body_limit``)."""
    client = admin(conf)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap_of(conf)}: {exc}") from None
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    limits = dict(max_message_bytes or {})
    check_message_limits(client, {n: v for n, v in limits.items() if n in existing}, body_limit, timeout)
    if not missing:
        return []
    configs = {n: {**({"max.message.bytes": str(limits[n])} if n in limits else {}), **(configs or {}).get(n, {})}
               for n in missing}
    futures = client.create_topics(
        [
            NewTopic(n, num_partitions=partitions, replication_factor=replication, config=(configs or {}).get(n, {}))
            for n in missing
        ],
        operation_timeout=timeout,
    )
    created = []
    for name, fut in futures.items():
        try:
            fut.result(timeout)
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            raise KafkaUnavailableError(f"cannot create topic {name}: {exc}") from None
    if created:
        log.info("created topics: %s", ", ".join(created))
    return created


def check_message_limits(client: AdminClient, limits: Mapping[str, int], body_limit: int | None,
                         timeout: float = 30.0) -> None:
    """Raise ``ConfigError`` when an existing topic's ``max.message.bytes`` is below its limit."""
    if not limits:
        return
    try:
        futures = client.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in limits])
        current = {res.name: int(fut.result(timeout)["max.message.bytes"].value) for res, fut in futures.items()}
    except (KafkaException, KeyError, ValueError) as exc:
        raise KafkaUnavailableError(f"cannot read the configuration of topics {', '.join(limits)}: {exc}") from None
    short = [(n, current[n], need) for n, need in limits.items() if n in current and current[n] < need]
    if short:
        body = f"herald.body-limit {body_limit} bytes" if body_limit is not None else "the body limit"
        raise ConfigError("; ".join(
            f"topic {n} has max.message.bytes {cur}, below the {need} bytes that {body} needs "
            f"(set it: kafka-configs.sh --alter --entity-type topics --entity-name {n} "
            f"--add-config max.message.bytes={need}, or lower herald.body-limit)" for n, cur, need in short))


def wait_topics(conf: Mapping[str, Any] | str, names: list[str], timeout: float = 30.0) -> None:
    """Wait until every topic of ``names`` can be written: the broker's metadata shows a leader for
    each partition, and each leader answers a ListOffsets for it (the partition's log exists there).

    A consumer that subscribes to a topic created a moment ago but not yet in the metadata is
    assigned none of its partitions until its next metadata refresh. A producer is worse off: the
    metadata can name a leader a moment before that broker has created the partition's log, so the
    first produce request fails with NOT_LEADER_OR_FOLLOWER while the next one, sent a few
    milliseconds later, is written. A broker before Kafka 4.5 takes any first sequence from a
    producer it has no state for (KIP-360; fixed by KAFKA-15591, apache/kafka#23234), and
    librdkafka then reports the failed records delivered ("implicitly acked by subsequent batch
    success", ``rd_kafka_dr_implicit_ack``; confluent-kafka-go#921): acknowledged records lost with
    no error. Every producer of Herald waits here for the topics it writes before its first record."""
    client = admin(conf)
    deadline = time.monotonic() + timeout
    missing: list[str] = list(names)
    while True:
        left = max(1.0, min(5.0, deadline - time.monotonic()))
        try:
            md = client.list_topics(timeout=left)
            missing = [n for n in names if n not in md.topics or md.topics[n].error is not None
                       or not md.topics[n].partitions
                       or any(p.leader < 0 for p in md.topics[n].partitions.values())]
            if not missing:
                missing = _not_served(client, {n: list(md.topics[n].partitions) for n in names}, left)
        except KafkaException:
            pass
        if not missing:
            return
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(f"topics not ready at {bootstrap_of(conf)} after {timeout:.0f}s: "
                                        f"{', '.join(missing[:5])}")
        time.sleep(0.1)


def _not_served(client: AdminClient, partitions: Mapping[str, list[int]], timeout: float) -> list[str]:
    """The topics of ``partitions`` with a partition whose leader does not answer ListOffsets yet."""
    if not partitions:
        return []
    latest: OffsetSpec = OffsetSpec.latest()  # type: ignore[no-untyped-call]  # confluent-kafka: unannotated
    futures = client.list_offsets({TopicPartition(n, p): latest for n, parts in partitions.items() for p in parts},
                                  request_timeout=timeout)
    failed: list[str] = []
    for tp, fut in futures.items():
        try:
            fut.result(timeout)
        except KafkaException:
            if tp.topic not in failed:
                failed.append(tp.topic)
    return failed
