"""Herald's own settings: the ``herald:`` section of cfg.yaml, overridden by environment variables.

Postee's environment variables are honoured too (``POSTEE_HTTP``, ``REGO_FILTERS_PATH``, ...).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool, StrictInt, ValidationInfo, WithJsonSchema, field_validator

from app.config.model import PosteeModel, PStr, PStrList, Secret, parse_duration
from app.errors import ConfigError
from app.config.kafka import KafkaSecret, KafkaSettings, resolve_secret

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


def _to_secrets(value: Any) -> list[Secret]:
    """A token or key list: each item literal, ``$NAME``/``${NAME}`` or ``file:/path`` (one or a list)."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    out = []
    for i, item in enumerate(items):
        try:
            text = resolve_secret(item)
        except ValueError as exc:
            raise ValueError(f"item {i}: {exc}") from None
        if not text:
            raise ValueError(f"item {i} is empty")
        out.append(item if isinstance(item, Secret) else Secret(text))
    return out


SecretList = Annotated[
    list[Secret], BeforeValidator(_to_secrets),
    WithJsonSchema({"type": "array", "items": {"type": "string", "format": "password", "writeOnly": True}}),
]


class RouteAuth(PosteeModel):
    """Credentials of one ``/tenant/{route}`` path: they replace the global tokens and keys there."""

    bearer_tokens: SecretList = Field(default_factory=list, description="Valid bearer tokens of this route.")
    hmac_keys: SecretList = Field(default_factory=list, description="HMAC-SHA256 body signature keys of this route.")


class AuthSettings(PosteeModel):
    """Who may post to the bridge: bearer tokens, HMAC-SHA256 body signatures, mTLS client certificates."""

    bearer_tokens: SecretList = Field(
        default_factory=list, description="Valid bearer tokens (several during a rotation); literal, $ENV, "
        "${ENV} or file:/path (env HERALD_AUTH_BEARER_TOKENS, comma-separated).")
    hmac_keys: SecretList = Field(
        default_factory=list, description="HMAC-SHA256 keys of body signatures; literal, $ENV, ${ENV} or "
        "file:/path (env HERALD_AUTH_HMAC_KEYS, comma-separated).")
    signature_header: PStr = Field("X-Hub-Signature-256", description="Header carrying the body signature.")
    signature_prefix: PStr = Field("sha256=", description="Prefix of the signature header's value, before the hex.")
    client_ca: PStr = Field(
        "", description="CA file of client certificates: the HTTPS listener requires one (mTLS) "
        "(env HERALD_AUTH_CLIENT_CA).")
    routes: dict[str, RouteAuth] = Field(
        default_factory=dict, description="Per /tenant/{route} credentials, overriding the global ones.")

    @field_validator("routes", mode="before")
    @classmethod
    def _routes(cls, value: Any) -> Any:
        return {} if value is None else value

    def configured(self) -> bool:
        """Global authentication is on (every path but the per-route overrides needs credentials)."""
        return bool(self.bearer_tokens or self.hmac_keys or self.client_ca)


class SpoolSettings(PosteeModel):
    """The bridge's disk spool: events Kafka cannot take are kept here (answered 202) until it can."""

    enabled: StrictBool = Field(
        True, description="Spool events while Kafka is unreachable; off: answer 503 (env HERALD_SPOOL_ENABLED).")
    dir: PStr = Field(
        ".herald/spool", description="Spool directory, relative to the working directory; one bridge per "
        "directory; keep it on a persistent volume (env HERALD_SPOOL_DIR).")
    max_bytes: StrictInt = Field(
        256 * 1024 * 1024, ge=1, description="Largest spool on disk, bytes or '256MiB'; when full, 503 with "
        "Retry-After (env HERALD_SPOOL_MAX_BYTES).")

    @field_validator("max_bytes", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value, "herald.spool.max-bytes")


class ConsoleUser(PosteeModel):
    """One console login: a role, and a token and/or a password (literal, $ENV, ${ENV} or file:/path)."""

    name: PStr = Field(description="User name (shown on the pages, typed at the login form with a password).")
    role: PStr = Field("viewer", description="viewer (reads every page) or operator (also redrives and purges).")
    tokens: SecretList = Field(default_factory=list, description="Login or bearer tokens of this user.")
    password: SecretList = Field(default_factory=list, description="Password(s) of this user.")

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ("viewer", "operator"):
            raise ValueError(f"must be 'viewer' or 'operator', got {value!r}")
        return value


class ConsoleSettings(PosteeModel):
    """``herald console``: the web console's address and who may log in."""

    listen: PStr = Field("127.0.0.1:8084", description="Console listen address host:port; a non-loopback "
                         "address needs users (env HERALD_CONSOLE_LISTEN).")
    users: list[ConsoleUser] = Field(default_factory=list, description="Console logins; none: the console "
                                     "is open to local users as operator (loopback only).")
    session_ttl: float = Field(8 * 3600.0, gt=0, description="Seconds (or '8h') a login lasts.")
    cert_file: PStr = Field("", description="TLS certificate (PEM) of the console; with key-file: https.")
    key_file: PStr = Field("", description="TLS private key (PEM) of cert-file.")
    recent: StrictInt = Field(5000, ge=10, description="Events kept in memory for the live page and stories.")

    @field_validator("users", mode="before")
    @classmethod
    def _users(cls, value: Any) -> Any:
        return [] if value is None else value

    @field_validator("session_ttl", mode="before")
    @classmethod
    def _ttl(cls, value: Any) -> float:
        return parse_duration(value, "herald.console.session-ttl")


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
    opa_token: KafkaSecret = Field(
        default_factory=lambda: Secret(""), description="Bearer token sent to OPA (its --authentication=token): "
        "literal, $ENV, ${ENV} or file:/path (env HERALD_OPA_TOKEN).")
    opa_ca_file: PStr = Field(
        "", description="CA bundle (PEM) that verifies an https:// OPA; empty: the system's (env HERALD_OPA_CA_FILE).")
    opa_cert_file: PStr = Field(
        "", description="Client certificate (PEM) for mutual TLS with OPA (env HERALD_OPA_CERT_FILE).")
    opa_key_file: PStr = Field(
        "", description="Private key (PEM) of opa-cert-file, when not in that file (env HERALD_OPA_KEY_FILE).")
    opa_tls_verify: StrictBool = Field(
        True, description="Verify OPA's certificate and host name; false only for tests (env HERALD_OPA_TLS_VERIFY).")
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
    auth: AuthSettings = Field(
        default_factory=AuthSettings, description="Bridge authentication: bearer tokens, HMAC signatures, mTLS "
        "(env HERALD_AUTH_*).")
    allow_unauthenticated: StrictBool = Field(
        False, description="Let the bridge listen on a non-loopback address without herald.auth "
        "(env HERALD_ALLOW_UNAUTHENTICATED).")
    read_timeout: float = Field(
        30.0, gt=0, description="Seconds (or '30s') a client has to send its request body; then 408 "
        "(env HERALD_READ_TIMEOUT).")
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds (or '10s') a connection has to send a request's headers (slow senders "
        "are cut off); also how long an idle keep-alive connection stays open (env HERALD_HEADER_TIMEOUT).")
    max_in_flight: StrictInt = Field(
        512, ge=1, description="Ingest requests handled at once; more get 503 with Retry-After "
        "(env HERALD_MAX_IN_FLIGHT).")
    max_json_depth: StrictInt = Field(
        100, ge=1, le=120, description="Deepest JSON nesting accepted; the embedded Rego engine refuses "
        "128 (env HERALD_MAX_JSON_DEPTH).")
    admin_listen: PStr = Field(
        "127.0.0.1:8083", description="The worker's admin listener host:port: GET /healthz, /readyz, /metrics "
        "and POST /reload (behind herald.auth); port 0 picks a free port, empty turns it off "
        "(env HERALD_ADMIN_LISTEN).")
    spool: SpoolSettings = Field(
        default_factory=SpoolSettings, description="Disk spool of the bridge for Kafka outages (env HERALD_SPOOL_*).")
    console: ConsoleSettings = Field(
        default_factory=lambda: ConsoleSettings(), description="The web console (herald console): address, users, roles "
        "(env HERALD_CONSOLE_LISTEN).")
    kafka: KafkaSettings = Field(
        default_factory=KafkaSettings,
        description="How every Kafka client connects: security protocol, SASL, TLS, librdkafka properties "
                    "(env HERALD_KAFKA_*).",
    )

    @field_validator("kafka", mode="before")
    @classmethod
    def _kafka(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("console", mode="before")
    @classmethod
    def _console(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("spool", mode="before")
    @classmethod
    def _spool(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("auth", mode="before")
    @classmethod
    def _auth(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("read_timeout", mode="before")
    @classmethod
    def _read_timeout(cls, value: Any) -> float:
        return parse_duration(value, "herald.read-timeout")

    @field_validator("header_timeout", mode="before")
    @classmethod
    def _header_timeout(cls, value: Any) -> float:
        return parse_duration(value, "herald.header-timeout")

    @field_validator("body_limit", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_size(value, "herald.body-limit")

    @field_validator("opa_ca_file", "opa_cert_file", "opa_key_file")
    @classmethod
    def _opa_file(cls, value: str, info: ValidationInfo) -> str:
        if not value:
            return value
        if not Path(value).is_file():
            raise ValueError(f"no such file: {value!r}")
        if info.field_name == "opa_key_file" and not info.data.get("opa_cert_file"):
            raise ValueError("is set without herald.opa-cert-file")
        if str(info.data.get("opa_url", "")).startswith("http://"):
            raise ValueError(f"is set but herald.opa-url {info.data['opa_url']!r} is http://; use https://")
        return value

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
    (("HERALD_OPA_TOKEN",), "opa_token"),
    (("HERALD_OPA_CA_FILE",), "opa_ca_file"),
    (("HERALD_OPA_CERT_FILE",), "opa_cert_file"),
    (("HERALD_OPA_KEY_FILE",), "opa_key_file"),
    (("HERALD_OPA_TLS_VERIFY",), "opa_tls_verify"),
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
    (("HERALD_ALLOW_UNAUTHENTICATED",), "allow_unauthenticated"),
    (("HERALD_READ_TIMEOUT",), "read_timeout"),
    (("HERALD_HEADER_TIMEOUT",), "header_timeout"),
    (("HERALD_MAX_IN_FLIGHT",), "max_in_flight"),
    (("HERALD_MAX_JSON_DEPTH",), "max_json_depth"),
    (("HERALD_ADMIN_LISTEN",), "admin_listen"),
    # herald.auth: "auth.<key>" sets herald.auth.<key>
    (("HERALD_AUTH_BEARER_TOKENS",), "auth.bearer_tokens"),
    (("HERALD_AUTH_HMAC_KEYS",), "auth.hmac_keys"),
    (("HERALD_AUTH_CLIENT_CA",), "auth.client_ca"),
    # herald.spool: "spool.<key>" sets herald.spool.<key>
    (("HERALD_SPOOL_ENABLED",), "spool.enabled"),
    (("HERALD_SPOOL_DIR",), "spool.dir"),
    (("HERALD_SPOOL_MAX_BYTES",), "spool.max_bytes"),
    (("HERALD_CONSOLE_LISTEN",), "console.listen"),
]
_INT_KEYS = {"partitions", "replication_factor", "max_in_flight", "max_json_depth"}
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
            elif key.startswith("auth."):
                sub = key.removeprefix("auth.")
                out.setdefault("auth", {})[sub.replace("_", "-")] = (
                    [v.strip() for v in value.split(",") if v.strip()] if sub != "client_ca" else value)
            elif key.startswith("console."):
                out.setdefault("console", {})[key.removeprefix("console.")] = value
            elif key.startswith("spool."):
                sub = key.removeprefix("spool.")
                if sub == "enabled":
                    if value.strip().lower() not in _BOOL:
                        raise ConfigError(f"expected true or false, got {value!r}", name, value)
                    out.setdefault("spool", {})["enabled"] = _BOOL[value.strip().lower()]
                else:
                    out.setdefault("spool", {})[sub.replace("_", "-")] = value
            elif key in ("allow_unauthenticated", "opa_tls_verify"):
                if value.strip().lower() not in _BOOL:
                    raise ConfigError(f"expected true or false, got {value!r}", name, value)
                out[key] = _BOOL[value.strip().lower()]
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
