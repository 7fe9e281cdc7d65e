"""Herald's own settings: the ``herald:`` section of cfg.yaml, overridden by environment variables.

Postee's environment variables are honoured too (``POSTEE_HTTP``, ``REGO_FILTERS_PATH``, ...).
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import Field, StrictInt, field_validator

from app.configmodel import PosteeModel, PStr, PStrList
from app.errors import ConfigError
from app.kafka_client import KafkaSettings

_SIZE = re.compile(r"^(\d+)\s*([kmg]i?b?|b)?$", re.IGNORECASE)
_SIZE_UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(value: Any, path: str) -> int:
    """Bytes from ``10485760``, ``"10MiB"``, ``"512kb"``, ``"1g"`` (1024-based)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value).strip())
    if not m:
        raise ConfigError(f"expected a size such as '10MiB', got {value!r}", path, value)
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _SIZE_UNIT[unit]


class HeraldSettings(PosteeModel):
    kafka_bootstrap_servers: PStr = Field(
        "127.0.0.1:9092", description="Kafka bootstrap servers (env KAFKA_BOOTSTRAP_SERVERS)."
    )
    topic_prefix: PStr = Field("herald.", description="Prefix of every topic (env HERALD_TOPIC_PREFIX).")
    partitions: StrictInt = Field(6, ge=1, description="Partitions of each topic created (env HERALD_PARTITIONS).")
    replication_factor: StrictInt = Field(
        1, ge=1, description="Replication factor of topics created (env HERALD_REPLICATION_FACTOR)."
    )
    consumer_group: PStr = Field("herald", description="Kafka consumer group id of workers (env HERALD_GROUP).")
    group_instance_id: PStr = Field(
        "", description="Static group membership: a restart within the session timeout (10 s) moves no partition. "
        "Unique per worker, e.g. the pod name (env HERALD_GROUP_INSTANCE_ID)."
    )
    engine: PStr = Field("embedded", description="Rego engine: embedded or opa (env HERALD_ENGINE).")
    opa_url: PStr = Field("", description="OPA server URL when engine is opa (env HERALD_OPA_URL).")
    body_limit: StrictInt = Field(
        10 * 1024 * 1024, description="Largest accepted request body, bytes or '10MiB' (env HERALD_BODY_LIMIT)."
    )
    http_listen: PStr = Field(
        "127.0.0.1:8082", description="Bridge listen address host:port (env POSTEE_HTTP, AQUAALERT_URL)."
    )
    https_listen: PStr = Field(
        "", description="HTTPS listen address; needs AQUAALERT_CERT_PEM/KEY_PEM (env POSTEE_HTTPS)."
    )
    template_dirs: PStrList = Field(
        default_factory=list, description="User template directories, after the built-in one (env HERALD_TEMPLATE_DIRS)."
    )
    filters_path: PStr = Field(
        "./rego-filters", description="Directory of route input-files (env REGO_FILTERS_PATH)."
    )
    debug: bool = Field(False, description="Debug logging (env POSTEE_DEBUG=1/true/yes/on).")
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="How every Kafka client connects: security protocol, SASL, TLS, librdkafka properties "
                    "(env HERALD_KAFKA_*).",
    )

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("body_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value, "herald.body-limit")

    @field_validator("engine")
    @classmethod
    def _engine(cls, value: str) -> str:
        if value not in ("embedded", "opa"):
            raise ValueError(f"must be 'embedded' or 'opa', got {value!r}")
        return value


# env var -> settings key; the first one set wins (POSTEE_ before AQUAALERT_)
ENV_OVERRIDES: list[tuple[tuple[str, ...], str]] = [
    (("KAFKA_BOOTSTRAP_SERVERS", "HERALD_KAFKA_BOOTSTRAP_SERVERS"), "kafka_bootstrap_servers"),
    (("HERALD_TOPIC_PREFIX",), "topic_prefix"),
    (("HERALD_PARTITIONS",), "partitions"),
    (("HERALD_REPLICATION_FACTOR",), "replication_factor"),
    (("HERALD_GROUP",), "consumer_group"),
    (("HERALD_GROUP_INSTANCE_ID",), "group_instance_id"),
    (("HERALD_ENGINE",), "engine"),
    (("HERALD_OPA_URL",), "opa_url"),
    (("HERALD_BODY_LIMIT",), "body_limit"),
    (("POSTEE_HTTP", "AQUAALERT_URL"), "http_listen"),
    (("POSTEE_HTTPS", "AQUAALERT_TLS"), "https_listen"),
    (("HERALD_TEMPLATE_DIRS",), "template_dirs"),
    (("REGO_FILTERS_PATH",), "filters_path"),
    (("POSTEE_DEBUG", "AQUAALERT_DEBUG", "HERALD_DEBUG"), "debug"),
    # herald.kafka: "kafka.<key>" sets herald.kafka.<key>
    (("HERALD_KAFKA_SECURITY_PROTOCOL",), "kafka.security_protocol"),
    (("HERALD_KAFKA_SASL_MECHANISM",), "kafka.sasl_mechanism"),
    (("HERALD_KAFKA_SASL_USERNAME",), "kafka.sasl_username"),
    (("HERALD_KAFKA_SASL_PASSWORD",), "kafka.sasl_password"),
    (("HERALD_KAFKA_OAUTHBEARER_CLIENT_ID",), "kafka.oauthbearer_client_id"),
    (("HERALD_KAFKA_OAUTHBEARER_CLIENT_SECRET",), "kafka.oauthbearer_client_secret"),
    (("HERALD_KAFKA_OAUTHBEARER_TOKEN_ENDPOINT_URL",), "kafka.oauthbearer_token_endpoint_url"),
    (("HERALD_KAFKA_OAUTHBEARER_SCOPE",), "kafka.oauthbearer_scope"),
    (("HERALD_KAFKA_SSL_CA_LOCATION",), "kafka.ssl_ca_location"),
    (("HERALD_KAFKA_SSL_CERTIFICATE_LOCATION",), "kafka.ssl_certificate_location"),
    (("HERALD_KAFKA_SSL_KEY_LOCATION",), "kafka.ssl_key_location"),
    (("HERALD_KAFKA_SSL_KEY_PASSWORD",), "kafka.ssl_key_password"),
    (("HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION",), "kafka.ssl_endpoint_identification"),
]
_INT_KEYS = {"partitions", "replication_factor"}
_TRUE = {"1", "true", "yes", "on", "debug"}
_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def env_overrides(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Settings from the environment; ``herald.kafka`` keys come as ``{"kafka": {"sasl-password": ...}}``."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = {}
    for names, key in ENV_OVERRIDES:
        for name in names:
            value = env.get(name)
            if value is None or value == "":
                continue
            if key.startswith("kafka."):
                sub = key.removeprefix("kafka.")
                if sub == "ssl_endpoint_identification":
                    if value.strip().lower() not in _BOOL:
                        raise ConfigError(f"expected true or false, got {value!r}", name, value)
                    out.setdefault("kafka", {})[sub.replace("_", "-")] = _BOOL[value.strip().lower()]
                else:
                    out.setdefault("kafka", {})[sub.replace("_", "-")] = value
            elif key in _INT_KEYS:
                if not value.strip().isdigit():
                    raise ConfigError(f"expected an integer, got {value!r}", name, value)
                out[key] = int(value)
            elif key == "template_dirs":
                out[key] = [p for p in value.split(os.pathsep) if p]
            elif key == "debug":
                # Postee turned debug on for ANY value (the Helm chart's "not" enabled it)
                out[key] = value.strip().lower() in _TRUE
            else:
                out[key] = value
            break
    return out
