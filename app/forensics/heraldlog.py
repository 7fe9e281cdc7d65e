"""What Herald did with each event, for the timeline: decisions, delivery attempts, dead letters.

The records are read from the decisions, deliveries and dlq.* topics and indexed by event id in a
temporary SQLite file, so joining them to a timeline of any size costs disk, not memory (SQLite's
page cache is a few MiB). Decision, delivery and dead-letter records are versioned loosely: the
reader keeps any field it does not know (dedup/aggregation outcome, template, ...) and tolerates
missing ones.

Deliveries and dead letters can happen long after the event (retries, redrives), so these topics
are read from the window's start up to now, not up to ``--until``.
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from app.kafka.window import Record, WindowReader, list_topics
from app.kafka.topics import Topics

# Dead-letter fields shown in the timeline; ``original`` (the whole message or event) is left out.
_DLQ_FIELDS = ("stage", "error", "error_type", "attempts", "status", "first_attempt_at", "last_attempt_at",
               "source_topic", "source_partition", "source_offset")


class HeraldLog:
    def __init__(self, directory: str | None = None) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="herald-join-", dir=directory)
        self.db = sqlite3.connect(str(Path(self._tmp.name) / "join.db"))
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("PRAGMA cache_size=-4096")  # 4 MiB
        self.db.execute("CREATE TABLE rec (event_id TEXT, kind TEXT, seq INTEGER, body BLOB)")
        self.counts = {"decision": 0, "delivery": 0, "dead_letter": 0}
        self._seq = 0

    def add(self, kind: str, event_id: str, body: dict[str, Any]) -> None:
        self._seq += 1
        self.counts[kind] += 1
        self.db.execute("INSERT INTO rec VALUES (?, ?, ?, ?)", (event_id, kind, self._seq, orjson.dumps(body)))

    def add_records(self, records: Iterable[Record], kind: str) -> None:
        for rec in records:
            try:
                body = orjson.loads(rec.value)
            except orjson.JSONDecodeError:
                continue  # not a Herald record; nothing to join
            if not isinstance(body, dict):
                continue
            event_id = str(body.get("event_id") or (rec.key or b"").decode("utf-8", "replace"))
            if not event_id:
                continue
            if kind == "dead_letter":
                body = {k: body.get(k) for k in _DLQ_FIELDS if k in body}
                body["topic"] = rec.topic
            self.add(kind, event_id, body)

    def finish(self) -> None:
        self.db.execute("CREATE INDEX rec_event ON rec (event_id, seq)")
        self.db.commit()

    def lookup(self, event_id: str) -> dict[str, Any]:
        """``{decision, deliveries, dead_letters}`` for an event; empty parts when nothing is known.
        A redriven or re-routed event may have several decisions: the last one is shown, the
        count is kept."""
        out: dict[str, Any] = {"decision": None, "deliveries": [], "dead_letters": []}
        decisions = 0
        for kind, body in self.db.execute("SELECT kind, body FROM rec WHERE event_id = ? ORDER BY seq", (event_id,)):
            record = orjson.loads(body)
            if kind == "decision":
                decisions += 1
                out["decision"] = record
            elif kind == "delivery":
                out["deliveries"].append(record)
            else:
                out["dead_letters"].append(record)
        if decisions > 1:
            out["decisions"] = decisions
        return out

    def close(self) -> None:
        self.db.close()
        self._tmp.cleanup()


def load_herald_log(kafka: Mapping[str, Any] | str, topics: Topics, since_ms: int | None,
                    progress: Callable[[str], None] | None = None) -> HeraldLog:
    log = HeraldLog()
    sources = [(topics.decisions, "decision"), (topics.deliveries, "delivery")]
    sources += [(t, "dead_letter") for t in list_topics(kafka, topics.prefix + "dlq.")]
    for topic, kind in sources:
        if progress is not None:
            progress(f"reading {topic}")
        log.add_records(WindowReader(kafka, topic, since_ms, None).records(), kind)
    log.finish()
    return log


def summarize(joined: dict[str, Any]) -> dict[str, Any]:
    """Flat columns for CSV: matched routes, delivered and failed actions, dead letters."""
    decision = joined.get("decision") or {}
    routes = decision.get("routes") or {}
    matched = sorted(name for name, v in routes.items() if isinstance(v, dict) and v.get("matched"))
    delivered = sorted({d.get("action", "") for d in joined.get("deliveries", []) if d.get("outcome") == "delivered"})
    dead = sorted({str(d.get("stage", "")) for d in joined.get("dead_letters", [])})
    return {
        "routes_matched": ";".join(matched),
        "actions": ";".join(sorted({f"{a.get('route')}/{a.get('action')}" for a in decision.get("actions") or []})),
        "delivered": ";".join(delivered),
        "dead_letters": ";".join(dead),
        "attempts": len(joined.get("deliveries", [])),
    }
