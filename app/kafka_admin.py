"""Topic creation and small admin helpers (confluent-kafka AdminClient)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from app.errors import KafkaUnavailableError
from app.kafka_client import bootstrap_of, make_admin

log = logging.getLogger("herald.kafka")


def admin(conf: Mapping[str, Any] | str) -> AdminClient:
    """An AdminClient on a client config (``app.kafka_client.client_config``)."""
    return make_admin(conf)  # type: ignore[arg-type]


def ensure_topics(
    conf: Mapping[str, Any] | str, names: list[str], partitions: int, replication: int, timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created.

    ``conf`` is a client config (``app.kafka_client.client_config(settings)``); a bare bootstrap
    string still works (PLAINTEXT) until every caller passes a config."""
    client = admin(conf)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap_of(conf)}: {exc}") from None
    missing = [n for n in dict.fromkeys(names) if n not in existing]
    if not missing:
        return []
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
