"""Messages on Herald's topics: the action message and the dead-letter record.

Both are JSON (orjson) documents; ``schemas/`` holds their JSON Schemas.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.content import Content
from app.redact import redact_value


@dataclass(slots=True)
class ActionMessage:
    """What the router sends to one action's topic: rendered content plus the event it came from."""

    event_id: str
    route: str
    action: str
    content: Content
    event: dict[str, Any] | None = None
    received_at: float = 0.0
    routed_at: float = field(default_factory=time.time)
    redrive: int = 0
    aggregated: int = 0  # number of events in an aggregate, 0 for a single event
    # one part of a message (e.g. a Security Hub finding id): set on the message a partial delivery's
    # dead letter carries, so that redriving it delivers this part although the whole was delivered
    part: str = ""

    @property
    def idempotency_key(self) -> str:
        key = f"{self.event_id}:{self.route}:{self.action}"
        return f"{key}:part:{self.part}" if self.part else key

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "event_id": self.event_id,
                "route": self.route,
                "action": self.action,
                "idempotency_key": self.idempotency_key,
                "content": self.content.to_dict(),
                "event": self.event,
                "received_at": self.received_at,
                "routed_at": self.routed_at,
                "redrive": self.redrive,
                "aggregated": self.aggregated,
                **({"part": self.part} if self.part else {}),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> ActionMessage:
        data = orjson.loads(raw)
        return cls(
            event_id=data["event_id"],
            route=data["route"],
            action=data["action"],
            content=Content.from_dict(data.get("content") or {}),
            event=data.get("event"),
            received_at=data.get("received_at", 0.0),
            routed_at=data.get("routed_at", 0.0),
            redrive=data.get("redrive", 0),
            aggregated=data.get("aggregated", 0),
            part=data.get("part", ""),
        )


@dataclass(slots=True)
class DeadLetter:
    """A message that could not be delivered (or routed), with why and where it came from."""

    stage: str  # "router" or the action name
    error: str
    error_type: str
    attempts: int
    first_attempt_at: float
    last_attempt_at: float
    source_topic: str
    source_partition: int
    source_offset: int
    event_id: str = ""
    status: int | None = None
    original: Any = None  # the action message as JSON, or the raw event text

    def __post_init__(self) -> None:
        # no registered secret reaches a dead letter: every string field, and every string in
        # ``original`` (raw event text or the action message's JSON), is redacted
        for name in ("stage", "error", "error_type", "source_topic", "event_id", "original"):
            setattr(self, name, redact_value(getattr(self, name)))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {k: redact_value(getattr(self, k)) for k in self.__slots__}
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> DeadLetter:
        return cls(**orjson.loads(raw))
