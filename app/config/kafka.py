"""The ``herald.kafka:`` block of cfg.yaml: Kafka security settings, checked and turned into
librdkafka properties (``KafkaSettings.librdkafka()``); ``app.kafka.client`` builds every
client's configuration from it.

    herald:
      kafka-bootstrap-servers: broker1:9096,broker2:9096
      kafka:
        security-protocol: SASL_SSL
        sasl-mechanism: SCRAM-SHA-512
        sasl-username: herald
        sasl-password: $KAFKA_PASSWORD        # or ${KAFKA_PASSWORD}, file:/run/secrets/kafka, or literal
        ssl-ca-location: /etc/herald/kafka-ca.pem
        properties:                          # any other librdkafka property
          client.rack: eu-west-1a

Secrets (``sasl-password``, ``oauthbearer-client-secret``, ``ssl-key-password`` and every
``properties`` key containing ``password`` or ``secret``) are ``configmodel.Secret``: registered
with ``app.redact`` and shown as ``***`` in repr, errors and ``herald check-config``.

"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, StrictBool, WithJsonSchema, field_validator

from app import redact
from app.config.model import PosteeModel, PStr, Secret
from app.errors import ConfigError


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
MASK = redact.MASK

_ENV_REF = re.compile(r"^\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))$")


def is_secret_key(key: str) -> bool:
    """Keys whose values are secrets: ``*password*``, ``*secret*``."""
    k = key.lower()
    return "password" in k or "secret" in k


def resolve_secret(value: Any, environ: Mapping[str, str] | None = None) -> str:
    """The text of a secret setting: ``$NAME`` / ``${NAME}`` from the environment, ``file:/path``
    read and stripped, ``$$...`` a literal starting with ``$``, anything else literal.

    Raises ``ValueError`` naming the variable or the file, never the value."""
    if isinstance(value, Secret):
        return value.reveal()
    if value is None:
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"expected a string, got {type(value).__name__}")
    text = str(value)
    if text.startswith("$$"):
        return text[1:]
    m = _ENV_REF.match(text)
    if m:
        name = m.group(1) or m.group(2)
        env = os.environ if environ is None else environ
        if name not in env:
            raise ValueError(f"environment variable {name} is not set")
        return env[name]
    if text.startswith("$"):
        raise ValueError("expected $NAME or ${NAME} naming an environment variable (write $$ for a literal $)")
    if text.startswith("file:"):
        path = text[len("file:"):]
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read secret file {path}: {exc.strerror}") from None
    return text


def _to_kafka_secret(value: Any) -> Secret:
    return value if isinstance(value, Secret) else Secret(resolve_secret(value))


KafkaSecret = Annotated[
    Secret,
    BeforeValidator(_to_kafka_secret),
    WithJsonSchema({"type": "string", "format": "password", "writeOnly": True,
                    "description": "literal, $ENV_NAME, ${ENV_NAME} or file:/path"}),
]

PropertyValue = str | int | float | bool | Secret

# properties that have their own key in herald.kafka (or are set by Herald itself)
_DEDICATED = {
    "bootstrap.servers": "herald.kafka-bootstrap-servers",
    "metadata.broker.list": "herald.kafka-bootstrap-servers",
    "security.protocol": "herald.kafka.security-protocol",
    "sasl.mechanism": "herald.kafka.sasl-mechanism",
    "sasl.mechanisms": "herald.kafka.sasl-mechanism",
    "sasl.username": "herald.kafka.sasl-username",
    "sasl.password": "herald.kafka.sasl-password",
    "sasl.oauthbearer.client.id": "herald.kafka.oauthbearer-client-id",
    "sasl.oauthbearer.client.secret": "herald.kafka.oauthbearer-client-secret",
    "sasl.oauthbearer.token.endpoint.url": "herald.kafka.oauthbearer-token-endpoint-url",
    "sasl.oauthbearer.scope": "herald.kafka.oauthbearer-scope",
    "ssl.ca.location": "herald.kafka.ssl-ca-location",
    "ssl.certificate.location": "herald.kafka.ssl-certificate-location",
    "ssl.key.location": "herald.kafka.ssl-key-location",
    "ssl.key.password": "herald.kafka.ssl-key-password",
    "ssl.endpoint.identification.algorithm": "herald.kafka.ssl-endpoint-identification",
    "group.id": None,
}


def _existing_file(value: str) -> str:
    if value and not Path(value).exists():
        raise ValueError(f"no such file: {value!r}")
    return value


class KafkaSettings(PosteeModel):
    """``herald.kafka``: how every Herald client connects to Kafka (librdkafka settings)."""

    security_protocol: PStr = Field(
        "PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (env HERALD_KAFKA_SECURITY_PROTOCOL)."
    )
    sasl_mechanism: PStr = Field(
        "", description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (env HERALD_KAFKA_SASL_MECHANISM)."
    )
    sasl_username: PStr = Field("", description="SASL PLAIN/SCRAM user name (env HERALD_KAFKA_SASL_USERNAME).")
    sasl_password: KafkaSecret = Field(
        default_factory=lambda: Secret(""),
        description="SASL PLAIN/SCRAM password: literal, $ENV, ${ENV} or file:/path (env HERALD_KAFKA_SASL_PASSWORD).",
    )
    oauthbearer_client_id: PStr = Field(
        "", description="OAUTHBEARER (OIDC client credentials) client id (env HERALD_KAFKA_OAUTHBEARER_CLIENT_ID)."
    )
    oauthbearer_client_secret: KafkaSecret = Field(
        default_factory=lambda: Secret(""),
        description="OIDC client secret: literal, $ENV, ${ENV} or file:/path (env HERALD_KAFKA_OAUTHBEARER_CLIENT_SECRET).",
    )
    oauthbearer_token_endpoint_url: PStr = Field(
        "", description="OIDC token endpoint URL (env HERALD_KAFKA_OAUTHBEARER_TOKEN_ENDPOINT_URL)."
    )
    oauthbearer_scope: PStr = Field("", description="OIDC scope, optional (env HERALD_KAFKA_OAUTHBEARER_SCOPE).")
    ssl_ca_location: PStr = Field(
        "", description="CA certificate(s) (PEM file or directory) to verify the brokers; empty: the system's "
                        "(env HERALD_KAFKA_SSL_CA_LOCATION)."
    )
    ssl_certificate_location: PStr = Field(
        "", description="Client certificate (PEM) for mutual TLS (env HERALD_KAFKA_SSL_CERTIFICATE_LOCATION)."
    )
    ssl_key_location: PStr = Field(
        "", description="Client private key (PEM) for mutual TLS (env HERALD_KAFKA_SSL_KEY_LOCATION)."
    )
    ssl_key_password: KafkaSecret = Field(
        default_factory=lambda: Secret(""),
        description="Password of an encrypted ssl-key-location: literal, $ENV, ${ENV} or file:/path "
                    "(env HERALD_KAFKA_SSL_KEY_PASSWORD).",
    )
    ssl_endpoint_identification: StrictBool = Field(
        True, description="Verify that the broker certificate matches its host name "
                          "(env HERALD_KAFKA_SSL_ENDPOINT_IDENTIFICATION)."
    )
    properties: dict[str, PropertyValue] = Field(
        default_factory=dict,
        description="Any other librdkafka client property (string, number or bool); keys containing "
                    "'password' or 'secret' are secrets ($ENV, ${ENV}, file:/path).",
    )

    @field_validator("security_protocol")
    @classmethod
    def _protocol(cls, value: str) -> str:
        up = value.strip().upper()
        if up not in SECURITY_PROTOCOLS:
            raise ValueError(f"must be one of {', '.join(SECURITY_PROTOCOLS)}, got {value!r}")
        return up

    @field_validator("sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str) -> str:
        up = value.strip().upper()
        if up and up not in SASL_MECHANISMS:
            raise ValueError(f"must be one of {', '.join(SASL_MECHANISMS)}, got {value!r}")
        return up

    @field_validator("ssl_ca_location")
    @classmethod
    def _ca(cls, value: str) -> str:
        return value if value == "probe" else _existing_file(value)  # librdkafka: "probe" = the OS's CAs

    @field_validator("ssl_certificate_location", "ssl_key_location")
    @classmethod
    def _file(cls, value: str) -> str:
        return _existing_file(value)

    @field_validator("properties", mode="before")
    @classmethod
    def _properties(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of librdkafka properties, got {type(value).__name__}")
        out: dict[str, Any] = {}
        for key, item in value.items():
            key = str(key)
            if isinstance(item, (dict, list)) or item is None:
                raise ValueError(f"property {key!r}: expected a string, number or bool, got "
                                 f"{'null' if item is None else type(item).__name__}")
            if key in _DEDICATED:
                use = _DEDICATED[key]
                raise ValueError(f"property {key!r} is set by Herald" + (f"; use {use} instead" if use else ""))
            if is_secret_key(key):
                try:
                    out[key] = _to_kafka_secret(item)
                except ValueError as exc:
                    raise ValueError(f"property {key!r}: {exc}") from None
            else:
                out[key] = item
        return out

    # -- checks that span keys (reported by config.parse_config with the others) -------------------
    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.security_protocol.endswith("SSL")

    def problems(self, path: str = "herald.kafka") -> list[str]:
        """Inconsistent combinations, each naming its key path (never a secret's value)."""
        out: list[str] = []
        mech, proto = self.sasl_mechanism, self.security_protocol
        if mech and not self.sasl:
            out.append(f"{path}.sasl-mechanism: {mech} needs security-protocol SASL_SSL or SASL_PLAINTEXT, "
                       f"got {proto} (value: {mech!r})")
        if self.sasl and not mech:
            out.append(f"{path}.sasl-mechanism: required with security-protocol {proto}: "
                       f"one of {', '.join(SASL_MECHANISMS)}")
        if mech in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            if not self.sasl_username:
                out.append(f"{path}.sasl-username: required with sasl-mechanism {mech}")
            if not self.sasl_password:
                out.append(f"{path}.sasl-password: required with sasl-mechanism {mech}")
        if mech == "OAUTHBEARER":
            for key, value in (("oauthbearer-client-id", self.oauthbearer_client_id),
                               ("oauthbearer-client-secret", self.oauthbearer_client_secret),
                               ("oauthbearer-token-endpoint-url", self.oauthbearer_token_endpoint_url)):
                if not value:
                    out.append(f"{path}.{key}: required with sasl-mechanism OAUTHBEARER (OIDC client credentials)")
        elif mech:
            for key, value in (("oauthbearer-client-id", self.oauthbearer_client_id),
                               ("oauthbearer-client-secret", self.oauthbearer_client_secret),
                               ("oauthbearer-token-endpoint-url", self.oauthbearer_token_endpoint_url)):
                if value:
                    out.append(f"{path}.{key}: only used with sasl-mechanism OAUTHBEARER, got {mech}")
        if not self.tls:
            for key, value in (("ssl-ca-location", self.ssl_ca_location),
                               ("ssl-certificate-location", self.ssl_certificate_location),
                               ("ssl-key-location", self.ssl_key_location),
                               ("ssl-key-password", self.ssl_key_password)):
                if value:
                    out.append(f"{path}.{key}: TLS settings need security-protocol SSL or SASL_SSL, got {proto}")
        if bool(self.ssl_certificate_location) != bool(self.ssl_key_location):
            have, need = (("ssl-certificate-location", "ssl-key-location") if self.ssl_certificate_location
                          else ("ssl-key-location", "ssl-certificate-location"))
            out.append(f"{path}.{need}: required with {have} (mutual TLS needs both)")
        return out

    def check(self, path: str = "herald.kafka") -> None:
        problems = self.problems(path)
        if problems:
            raise ConfigError("; ".join(problems))

    def described(self) -> dict[str, Any]:
        """The settings that are set, secrets as ``***`` (for ``herald check-config``)."""
        out: dict[str, Any] = {"security-protocol": self.security_protocol}
        for name in type(self).model_fields:
            if name in ("security_protocol", "properties"):
                continue
            value = getattr(self, name)
            key = name.replace("_", "-")
            if isinstance(value, Secret):
                if value:
                    out[key] = MASK
            elif name == "ssl_endpoint_identification":
                if self.tls:
                    out[key] = value
            elif value:
                out[key] = value
        if self.properties:
            out["properties"] = {k: (MASK if isinstance(v, Secret) else v) for k, v in self.properties.items()}
        return out

    def librdkafka(self) -> dict[str, Any]:
        """The security part of a librdkafka configuration (secrets revealed: never log this)."""
        conf: dict[str, Any] = {"security.protocol": self.security_protocol.lower()}
        if self.sasl:
            conf["sasl.mechanism"] = self.sasl_mechanism
            if self.sasl_mechanism == "OAUTHBEARER":
                conf["sasl.oauthbearer.method"] = "oidc"
                conf["sasl.oauthbearer.client.id"] = self.oauthbearer_client_id
                conf["sasl.oauthbearer.client.secret"] = self.oauthbearer_client_secret.reveal()
                conf["sasl.oauthbearer.token.endpoint.url"] = self.oauthbearer_token_endpoint_url
                if self.oauthbearer_scope:
                    conf["sasl.oauthbearer.scope"] = self.oauthbearer_scope
            else:
                conf["sasl.username"] = self.sasl_username
                conf["sasl.password"] = self.sasl_password.reveal()
        if self.tls:
            for key, value in (("ssl.ca.location", self.ssl_ca_location),
                               ("ssl.certificate.location", self.ssl_certificate_location),
                               ("ssl.key.location", self.ssl_key_location)):
                if value:
                    conf[key] = value
            if self.ssl_key_password:
                conf["ssl.key.password"] = self.ssl_key_password.reveal()
            conf["ssl.endpoint.identification.algorithm"] = "https" if self.ssl_endpoint_identification else "none"
        for key, prop in self.properties.items():
            conf[key] = prop.reveal() if isinstance(prop, Secret) else prop
        return conf
