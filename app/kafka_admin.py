"""Topic creation and small admin helpers (confluent-kafka AdminClient)."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from app.errors import KafkaUnavailableError

log = logging.getLogger("herald.kafka")


def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.connection.setup.timeout.ms": 5000})


def ensure_topics(
    bootstrap: str, names: list[str], partitions: int, replication: int, timeout: float = 30.0,
    configs: dict[str, dict[str, str]] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    client = admin(bootstrap)
    try:
        existing = set(client.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
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
