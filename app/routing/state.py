"""Pure logic of dedup and aggregation (Postee §3.3–3.4, fixed where Postee is wrong).

Dedup keys follow Postee exactly (dotted paths, first element of arrays, Go ``%v`` formatting,
joined by ``-``) but are scoped per route by the caller, and an event lacking every property is
delivered rather than dropped. Aggregation batches are per route, oldest first; every action of
the route gets every batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from app import gojson
from app.content import Content

_MISSING = object()


def _lookup(event: Any, path: str) -> Any:
    cur = event
    for part in path.split("."):
        if isinstance(cur, list):
            if not cur:
                return _MISSING
            cur = cur[0]
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    if isinstance(cur, list):
        return cur[0] if cur else _MISSING
    return cur


def dedup_key(event: dict[str, Any], props: list[str]) -> str:
    """Postee's key: values at each dotted path, Go-formatted, joined by '-'; '' when none exist."""
    values = []
    for prop in props:
        value = _lookup(event, prop)
        if value is not _MISSING:
            values.append(gojson.format_value(value))
    return "-".join(values)


@dataclass
class Batch:
    """An aggregation batch of one route (a route-state table value, JSON-serialisable)."""

    items: list[dict[str, str]] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    started_at: float = 0.0
    received: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "event_ids": self.event_ids, "started_at": self.started_at,
                "received": self.received}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Batch:
        if not data:
            return cls()
        return cls(list(data.get("items", [])), list(data.get("event_ids", [])), float(data.get("started_at", 0.0)),
                   list(data.get("received", [])))

    def add(self, event_id: str, content: Content, now: float, received_at: float = 0.0) -> None:
        """Keep the batch oldest first by the time the bridge accepted each event (events reach
        this stage through several partitions, so arrival order can differ slightly)."""
        if not self.items:
            self.started_at = now
        received_at = received_at or now
        at = len(self.received)
        while at > 0 and self.received[at - 1] > received_at:
            at -= 1
        self.items.insert(at, content.to_dict())
        self.event_ids.insert(at, event_id)
        self.received.insert(at, received_at)

    def contents(self) -> list[Content]:
        return [Content.from_dict(i) for i in self.items]

    def owners(self) -> str:
        """Owners of every item, kept (Postee's aggregates lost them)."""
        seen: list[str] = []
        for item in self.items:
            for owner in (item.get("owners") or "").split(";"):
                if owner and owner not in seen:
                    seen.append(owner)
        return ";".join(seen)

    def aggregate_id(self) -> str:
        """Deterministic id of the aggregate, so reprocessing gives the same idempotency key."""
        return "agg-" + hashlib.sha256("\n".join(self.event_ids).encode()).hexdigest()[:24]

    def due(self, timeout: float, now: float) -> bool:
        return bool(self.items) and timeout > 0 and now - self.started_at >= timeout
