"""What the console does besides reading: try a route (no side effects) and the dead-letter
operations (``app.forensics.dlq``), with a selection by id or by a Rego filter and its preview."""

from __future__ import annotations

import time
from typing import Any

import orjson
from confluent_kafka import Producer

from app.config.loader import Config
from app.errors import EventError, HeraldError, PolicyError
from app.forensics.dlq import DeadLetters
from app.kafka.client import producer_config
from app.kafka.topics import SizeLimits
from app.routing.policy.engine import EmbeddedEngine
from app.routing.router import TRY_ORIGINS, EventMeta, Router, route_report

# how the event under test arrived (the guard on system-changing actions looks at it)
ORIGINS = TRY_ORIGINS


def try_route(config: Config, raw: bytes, origin: str = "bearer", route: str | None = None) -> dict[str, Any]:
    """``herald test-route`` in the browser: every route, matched or not and why, guard reasons, and
    the content each action would get. Nothing is produced or delivered."""
    if origin not in ORIGINS:
        raise HeraldError(f"origin must be one of {', '.join(ORIGINS)}, got {origin!r}")
    if route and route not in config.routes:
        raise HeraldError(f"unknown route {route!r}; routes: {', '.join(config.routes)}")
    try:
        orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise HeraldError(f"the event is not JSON: {exc}") from None
    router = Router(config)
    meta = EventMeta.from_headers(ORIGINS[origin], "try-route", 0.0)
    meta.route = route or None
    try:
        result = router.route(raw, meta)
    except EventError as exc:
        raise HeraldError(str(exc)) from None
    return route_report(config, meta, result)


def _filter_engine(where: str) -> EmbeddedEngine:
    engine = EmbeddedEngine()
    try:
        engine.add_module("filter", f"package herald.redrive\n\ndefault allow = false\n\nallow {{\n{where}\n}}\n")
    except PolicyError as exc:
        raise HeraldError(f"filter does not compile: {exc}") from None
    return engine


def select(dl: DeadLetters, action: str, ids: list[str] | None = None, where: str = "") -> list[str]:
    """Ids of ``action``'s dead letters in ``ids`` (all when None) for which Rego ``where`` holds."""
    dl.stages(action)
    engine = _filter_engine(where) if where.strip() else None
    wanted = set(ids) if ids is not None else None
    out = []
    for rec in dl.read(action):
        if wanted is not None and rec.id not in wanted:
            continue
        if engine is not None:
            engine.set_input_json(orjson.dumps(rec.record).decode())
            if engine.eval_path("data.herald.redrive.allow") is not True:
                continue
        out.append(rec.id)
    return out


def redrive(dl: DeadLetters, action: str, ids: list[str]) -> dict[str, int]:
    """Send the dead letters ``ids`` of ``action`` back to its topic (as ``herald dlq redrive``: the
    action's delivered keys make a message delivered meanwhile a no-op)."""
    if action == "router" or action not in dl.config.actions:
        raise HeraldError(f"redrive needs an enabled action name, got {action!r}")
    wanted = set(ids)
    producer = Producer(producer_config(
        dl.kafka, **{"message.max.bytes": SizeLimits(dl.config.herald.body_limit).pipeline}))
    counts = {"redriven": 0, "skipped": 0}
    for rec in dl.read(action):
        if rec.id not in wanted:
            continue
        wanted.discard(rec.id)
        original = rec.record.get("original")
        if not isinstance(original, dict) or "content" not in original:
            counts["skipped"] += 1
            continue
        original["redrive"] = int(original.get("redrive", 0)) + 1
        original["redriven_at"] = time.time()
        producer.produce(dl.topics.action(action), key=str(original["event_id"]).encode(), value=orjson.dumps(original))
        counts["redriven"] += 1
        producer.poll(0)
    counts["missing"] = len(wanted)
    if producer.flush(30) != 0:
        raise HeraldError("Kafka did not acknowledge every redriven message; redrive again")
    return counts


def dead_letter_list(dl: DeadLetters, action: str) -> list[dict[str, Any]]:
    return [{"id": r.id, "event_id": r.record.get("event_id"), "error": r.record.get("error"),
             "error_type": r.record.get("error_type"), "status": r.record.get("status"),
             "attempts": r.record.get("attempts"), "last_attempt_at": r.record.get("last_attempt_at")}
            for r in dl.read(action)]
