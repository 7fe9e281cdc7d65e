"""Herald's exception tree. Every error Herald raises is one of these; third-party
exceptions are translated at the boundary that calls the library.

    HeraldError
    ├── ConfigError                  a config file or setting is wrong (names the key path and value)
    ├── PolicyError                  a Rego module does not compile or evaluate
    │   └── TemplateError            a template is missing, fails, or breaks the template contract
    ├── EventError                   an event is not a JSON object, or otherwise unroutable
    ├── KafkaUnavailableError        the broker cannot be reached (bridge answers 503)
    │   └── KafkaConnectError        a client cannot connect at start: authentication, TLS, wrong
    │                                security protocol, nothing listening (app.kafka.client.probe)
    └── ActionError                  delivering to an action failed
        ├── RetryableActionError     try again later (408/429/5xx, connection errors); may carry retry_after
        ├── PermanentActionError     retrying cannot help (other 4xx, bad payload, bad config)
        └── PartialDeliveryError     the message was delivered except some parts the peer rejected for
                                     good (e.g. Security Hub's FailedFindings): one dead letter per part

The action runner is the only place that decides to retry; actions only classify.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class HeraldError(Exception):
    """Base of every Herald error."""


class ConfigError(HeraldError):
    """A configuration problem. ``path`` is the dotted key path, e.g. ``actions[2].port``."""

    def __init__(self, message: str, path: str = "", value: object = None) -> None:
        self.path = path
        self.value = value
        super().__init__(f"{path}: {message}" if path else message)


class PolicyError(HeraldError):
    """A Rego policy failed to compile or evaluate. ``source`` names the file or template."""

    def __init__(self, message: str, source: str = "") -> None:
        self.source = source
        super().__init__(f"{source}: {message}" if source else message)


class TemplateError(PolicyError):
    """A template could not be rendered into content."""


class EventError(HeraldError):
    """An event cannot be routed (not JSON, not an object)."""


class KafkaUnavailableError(HeraldError):
    """Kafka did not acknowledge a write or cannot be reached."""


class KafkaConnectError(KafkaUnavailableError):
    """A Kafka client cannot connect with its configuration; the message names the cause
    (authentication failed, TLS handshake failed, plaintext client on a TLS/SASL listener,
    nothing listening). Never carries a secret."""


class ActionError(HeraldError):
    """Delivery to an action failed. ``status`` is the peer's status code when there is one."""

    retryable: bool = False

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RetryableActionError(ActionError):
    """A transient failure; ``retry_after`` (seconds) is the peer's hint, if it gave one."""

    retryable = True

    def __init__(
        self, message: str, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status)


class PermanentActionError(ActionError):
    """A failure that retrying cannot fix."""


@dataclass
class RejectedPart:
    """One part of a message that the peer rejected while accepting the rest.

    ``part`` names it (e.g. a Security Hub finding id), ``error`` says why (the peer's error code
    and message), and ``message`` is an action message carrying just this part: it becomes the
    dead letter's ``original``, so ``herald dlq redrive`` re-sends this part alone. Its ``part``
    field makes its idempotency key differ from the whole message's, which was delivered.
    """

    part: str
    error: str
    error_type: str
    message: Any  # app.messages.ActionMessage (not imported here: messages imports this module)


class PartialDeliveryError(ActionError):
    """Delivered, except ``rejected``: parts the peer refused for good (not retried).

    The runner counts the message as delivered (it is not re-sent) and the worker writes one
    dead letter per rejected part to the action's DLQ topic.
    """

    def __init__(self, message: str, rejected: list[RejectedPart]) -> None:
        self.rejected = rejected
        super().__init__(message)
