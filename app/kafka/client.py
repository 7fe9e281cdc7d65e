"""One Kafka client configuration for every client Herald makes (bridge producer, worker, admin,
dead-letter tools, timeline and replay readers): ``client_config(settings)`` gives
``bootstrap.servers``, the security properties of ``herald.kafka`` (``app.config.kafka``) and its
passthrough ``properties``; callers add their own tuning and callbacks (``error_cb``, ``logger``).

``probe(conf)`` connects once at start and raises ``KafkaConnectError`` naming the cause within
seconds (librdkafka itself retries a wrong password or an unknown CA forever, quietly).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from app import redact
from app.config.kafka import KafkaSettings
from app.errors import ConfigError, KafkaConnectError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


class ClientSettings(Protocol):
    """What the client configurations read of ``app.config.settings.HeraldSettings`` ."""

    kafka_bootstrap_servers: str

    @property
    def kafka(self) -> KafkaSettings: ...


# -- librdkafka configurations ---------------------------------------------------------------------

def client_config(settings: ClientSettings) -> dict[str, Any]:
    """The base librdkafka configuration of every Herald client: ``bootstrap.servers``, the
    security settings of ``herald.kafka`` and its ``properties``. Callers add their own tuning and
    callbacks (no ``error_cb`` here). Raises ``ConfigError`` for inconsistent settings."""
    kafka: KafkaSettings = settings.kafka
    kafka.check()
    return {"bootstrap.servers": settings.kafka_bootstrap_servers, **kafka.librdkafka()}


# librdkafka's log lines of every client go through Python logging (the process's log format,
# text or JSON), never straight to stderr; a config's own "logger" wins
_CLIENT_LOG = logging.getLogger("herald.kafka.client")


def producer_config(settings: ClientSettings | Mapping[str, Any] | str, **overrides: Any) -> dict[str, Any]:
    """A producer's configuration: acks=all, idempotent, Java's murmur2 partitioner (the partition
    every other Herald producer and Java client picks for a key); ``overrides`` win, named as
    librdkafka and confluent-kafka name them (``**{"linger.ms": 5}``, ``error_cb=...``)."""
    base = as_client_config(settings)
    return {"logger": _CLIENT_LOG, **base, "acks": "all", "enable.idempotence": True, "partitioner": "murmur2_random", **overrides}


def consumer_config(settings: ClientSettings | Mapping[str, Any] | str, group_id: str,
                    **overrides: Any) -> dict[str, Any]:
    """A consumer's configuration: ``group.id``, no auto commit, earliest offset when the group has
    none; ``overrides`` win."""
    base = as_client_config(settings)
    return {"logger": _CLIENT_LOG, **base, "group.id": group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest", **overrides}


def admin_config(settings: ClientSettings | Mapping[str, Any] | str, **overrides: Any) -> dict[str, Any]:
    return {"logger": _CLIENT_LOG, **as_client_config(settings), "socket.connection.setup.timeout.ms": 5000,
            **overrides}


def make_admin(settings: ClientSettings | Mapping[str, Any] | str, **overrides: Any) -> AdminClient:
    """A confluent-kafka ``AdminClient`` on ``settings`` (HeraldSettings or a client config)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    conf = admin_config(settings, **overrides)
    try:
        return AdminClient(conf)
    except KafkaException as exc:
        raise ConfigError(f"invalid Kafka client configuration: {_text(exc)}", "herald.kafka") from None


def as_client_config(conf: ClientSettings | Mapping[str, Any] | str) -> dict[str, Any]:
    """A client config from HeraldSettings, a client config dict, or (transitional, for callers not
    yet passing a config) a bare bootstrap string, which means PLAINTEXT."""
    if isinstance(conf, str):
        return {"bootstrap.servers": conf}
    if isinstance(conf, Mapping):
        return dict(conf)
    return client_config(conf)


def bootstrap_of(conf: Mapping[str, Any] | str) -> str:
    """The bootstrap servers of a client config (for messages)."""
    if isinstance(conf, str):
        return conf
    return str(conf.get("bootstrap.servers") or conf.get("metadata.broker.list") or "?")


def validate(conf: Mapping[str, Any]) -> None:
    """Let librdkafka check every property (names, enum values, readable CA/key files) without
    connecting: a client without ``bootstrap.servers`` never connects, and without
    ``sasl.oauthbearer.method`` it does not fetch an OIDC token. Raises ``ConfigError``."""
    from confluent_kafka import KafkaException, Producer

    offline = ("bootstrap.servers", "metadata.broker.list", "sasl.oauthbearer.method")
    local = {k: v for k, v in conf.items() if k not in offline}
    try:
        Producer({**local, "log_level": 0})
    except KafkaException as exc:
        raise ConfigError(f"invalid Kafka client configuration: {_text(exc)}", "herald.kafka") from None


# -- failing fast --------------------------------------------------------------------------------


def _text(err: Any) -> str:
    """A librdkafka error's text, secrets redacted."""
    if hasattr(err, "args") and err.args and hasattr(err.args[0], "str"):
        err = err.args[0]
    text = err.str() if hasattr(err, "str") else str(err)
    return redact.redact(text)


def _diagnose(conf: Mapping[str, Any], errors: list[Any], elapsed: float, done: bool) -> str | None:
    """The cause, once the errors seen so far tell it (``done``: the probe's time is up)."""
    from confluent_kafka import KafkaError

    bootstrap = bootstrap_of(conf)
    protocol = str(conf.get("security.protocol", "plaintext")).upper()
    codes = [e.code() for e in errors]
    texts = [_text(e) for e in errors]
    for e, text in zip(errors, texts):
        if e.code() == KafkaError._AUTHENTICATION:
            mech = conf.get("sasl.mechanism") or conf.get("sasl.mechanisms") or ""
            who = f" as {conf['sasl.username']!r}" if conf.get("sasl.username") and mech != "OAUTHBEARER" else ""
            return (f"Kafka authentication failed at {bootstrap} (SASL {mech}{who}); check herald.kafka's "
                    f"credentials: {text}")
    for e, text in zip(errors, texts):
        low = text.lower()
        if e.code() == KafkaError._SSL or (e.code() == KafkaError._TRANSPORT and ("ssl" in low or "tls" in low)):
            hint = ("; set herald.kafka.ssl-ca-location to the CA that signed the broker certificate"
                    if "certificate verify failed" in low or "unable to get" in low or "self-signed" in low
                    or "self signed" in low else "")
            return f"TLS handshake with Kafka at {bootstrap} failed{hint}: {text}"
    for e, text in zip(errors, texts):
        if e.code() == KafkaError._RESOLVE or "failed to resolve" in text.lower():
            return f"cannot resolve the Kafka bootstrap servers {bootstrap}: {text}"
    refused = [t for t in texts if "connection refused" in t.lower()]
    if KafkaError._ALL_BROKERS_DOWN in codes or done:
        if refused:
            return f"nothing is listening at {bootstrap} (connection refused): is Kafka running there?"
        if not done and elapsed < 1.0:
            return None  # a more specific error (authentication, TLS) may still come
        if KafkaError._ALL_BROKERS_DOWN in codes:
            # connected, then closed by the broker: the listener speaks another protocol
            listener_hint = {"PLAINTEXT": "if the listener uses TLS or SASL, set herald.kafka.security-protocol",
                             "SSL": "if the listener uses SASL, set herald.kafka.security-protocol to SASL_SSL "
                                    "and herald.kafka.sasl-mechanism",
                             "SASL_PLAINTEXT": "if the listener uses TLS, set herald.kafka.security-protocol to "
                                               "SASL_SSL",
                             }.get(protocol)
            if listener_hint:
                return (f"no broker reachable at {bootstrap}; {listener_hint} "
                        f"(the broker closed the {protocol} connection)")
        others = [t for e, t in zip(errors, texts) if e.code() != KafkaError._ALL_BROKERS_DOWN]
        last = others[-1] if others else (texts[-1] if texts else "no answer")
        return f"no broker reachable at {bootstrap} within {elapsed:.0f}s ({protocol}): {last}"
    return None


def probe(conf: Mapping[str, Any], timeout: float = 10.0) -> None:
    """Connect once with ``conf`` and return when a broker answered a metadata request; otherwise
    raise ``KafkaConnectError`` naming the cause, as soon as it is known (a wrong password in
    well under a second) and at the latest after ``timeout`` seconds. Never hangs, never logs the
    librdkafka error storm."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    errors: list[Any] = []
    started = time.monotonic()
    probe_conf = {k: v for k, v in conf.items() if k not in ("logger", "error_cb")}
    probe_conf.update({
        "error_cb": errors.append,
        "log_level": 0,  # the cause is raised; librdkafka's own log lines would repeat it on stderr
        "socket.connection.setup.timeout.ms": max(1000, int(min(timeout, 10.0) * 1000)),
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
    })
    try:
        admin = AdminClient(probe_conf)
    except KafkaException as exc:
        raise ConfigError(f"invalid Kafka client configuration: {_text(exc)}", "herald.kafka") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid Kafka client configuration: {redact.redact(str(exc))}", "herald.kafka") from None
    deadline = started + timeout
    while True:
        left = deadline - time.monotonic()
        try:
            md = admin.list_topics(timeout=max(0.05, min(0.25, left)))
            if md.brokers:
                return
        except KafkaException:
            pass  # the cause comes through error_cb
        admin.poll(0.05)
        elapsed = time.monotonic() - started
        done = time.monotonic() >= deadline
        cause = _diagnose(probe_conf, errors, elapsed, done)
        if cause is not None:
            raise KafkaConnectError(cause)
