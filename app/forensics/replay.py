"""``herald replay``: recorded events through a routing config, again.

    --dry-run (default)   route and render every event, send nothing; print how many messages
                          each route and action would get
    --diff other.yaml     route the same events through both configs; list the events whose
                          matched routes, chosen actions or rendered content differ
    --to-actions a,b      really send: the messages for those actions go to their action topics of
                          the running Herald (needs --yes), e.g. to re-drive history into a new
                          destination

Events come from the events topic for a window (``--since``/``--until``, Kafka time) or from a
JSON Lines file (one event per line, or ``herald timeline`` rows, whose ``event``, ``event_id``
and ``route`` are used). Routing is ``app.routing.router.Router``, the worker's own pure function, with
the ``/tenant/{route}`` header honoured, so a dry run counts what the live run sent. Dedup and
aggregation act after routing, in the worker, on its state: replay counts the events handed to
them, not what they would send. ``--to-actions`` messages keep the event's idempotency key, so an
action that already delivered one (within its delivered-keys retention) suppresses it as a
duplicate: re-drive history into a *new* action, as the use case is.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from app.config.loader import Config
from app.errors import EventError, HeraldError, KafkaUnavailableError
from app.routing.router import ORIGIN_KAFKA, EventMeta, Router, RoutingResult
from app.kafka.topics import SizeLimits, Topics


@dataclass(slots=True)
class Recorded:
    event_id: str
    route: str | None
    raw: bytes
    # where the event came from, for the guard on system-changing actions (app/routing/router.py): an
    # event read back from the events topic keeps its bridge headers; one from a file is the
    # operator's own input, as if produced to Kafka directly
    origin: str = ORIGIN_KAFKA
    authenticated: str = ""


def events_from_file(path: str) -> Iterator[Recorded]:
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise HeraldError(f"--from-file: cannot read {path}: {exc.strerror}") from None
    with fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise HeraldError(f"--from-file {path}: line {n} is not JSON: {exc}") from None
            if isinstance(doc, dict) and isinstance(doc.get("event"), dict) and "event_id" in doc:
                yield Recorded(str(doc["event_id"]), doc.get("route"), orjson.dumps(doc["event"]))
            else:
                yield Recorded(f"{Path(path).name}:{n}", None, line.strip())


def events_from_kafka(config: Config, since_ns: int | None, until_ns: int | None) -> Iterator[Recorded]:
    from app.kafka.window import WindowReader
    from app.forensics.timeline import Progress

    from app.kafka.client import client_config

    topics = Topics(config.herald.topic_prefix)
    reader = WindowReader(client_config(config.herald), topics.events,
                          None if since_ns is None else since_ns // 10**6, None if until_ns is None else until_ns // 10**6)
    total, progress = reader.total, Progress()
    for i, rec in enumerate(reader.records(), 1):
        meta = EventMeta.from_headers(rec.headers, f"{rec.topic}-{rec.partition}-{rec.offset}", rec.timestamp_ms / 1000)
        progress.bar("replaying", i, total)
        yield Recorded(meta.event_id, meta.route, rec.value, meta.origin, meta.authenticated)
    progress.done()


@dataclass
class Tally:
    events: int = 0
    unparseable: int = 0
    routes: Counter[str] = field(default_factory=Counter)  # events each route matched
    actions: Counter[str] = field(default_factory=Counter)  # messages per action
    route_actions: Counter[str] = field(default_factory=Counter)  # "route/action"
    failures: Counter[str] = field(default_factory=Counter)  # router dead letters per route
    stateful: Counter[str] = field(default_factory=Counter)  # events handed to dedup/aggregation, per route

    def add(self, result: RoutingResult | None) -> None:
        self.events += 1
        if result is None:
            self.unparseable += 1
            return
        self.routes.update(name for name, v in result.verdicts.items() if v.matched)
        for m in result.messages:
            self.actions[m.action] += 1
            self.route_actions[f"{m.route}/{m.action}"] += 1
        self.failures.update(f.route for f in result.failures)
        # routes with dedup/aggregation hand the event to the worker's stateful stage instead of
        # producing messages; whether that stage sends depends on its state, which replay lacks
        self.stateful.update(s["route"] for s in getattr(result, "stateful", []))

    def to_dict(self) -> dict[str, Any]:
        return {"events": self.events, "unparseable": self.unparseable, "routes": dict(sorted(self.routes.items())),
                "actions": dict(sorted(self.actions.items())), "route_actions": dict(sorted(self.route_actions.items())),
                "failures": dict(sorted(self.failures.items())), "stateful": dict(sorted(self.stateful.items()))}


def route_one(router: Router, ev: Recorded) -> RoutingResult | None:
    try:
        return router.route(ev.raw, EventMeta(event_id=ev.event_id, route=ev.route, origin=ev.origin,
                                              authenticated=ev.authenticated))
    except EventError:
        return None


def _signature(result: RoutingResult | None) -> tuple[set[str], set[str], dict[str, bytes]]:
    if result is None:
        return set(), set(), {}
    routes = {n for n, v in result.verdicts.items() if v.matched}
    actions = {f"{m.route}/{m.action}" for m in result.messages}
    content = {r: orjson.dumps(c.to_dict(), option=orjson.OPT_SORT_KEYS) for r, c in result.rendered.items()}
    return routes, actions, content


def compare(ev: Recorded, a: RoutingResult | None, b: RoutingResult | None) -> dict[str, Any] | None:
    """What differs for one event between config A and config B (None: nothing)."""
    ra, aa, ca = _signature(a)
    rb, ab, cb = _signature(b)
    changed_content = sorted(r for r in ca.keys() & cb.keys() if ca[r] != cb[r])
    if ra == rb and aa == ab and not changed_content:
        return None
    return {"event_id": ev.event_id, "routes_removed": sorted(ra - rb), "routes_added": sorted(rb - ra),
            "actions_removed": sorted(aa - ab), "actions_added": sorted(ab - aa), "content_changed": changed_content}


class ActionSender:
    """Produces ActionMessages to the running Herald's action topics (acks=all, idempotent)."""

    def __init__(self, config: Config) -> None:
        from confluent_kafka import Producer

        from app.kafka.client import producer_config

        self.topics = Topics(config.herald.topic_prefix)
        # murmur2 (producer_config's partitioner): the partition the worker's own producer picks for
        # the key, so the action agent's per-partition delivered-keys check sees a replayed duplicate
        self.producer = Producer(producer_config(
            config.herald, **{"linger.ms": 5, "message.max.bytes": SizeLimits(config.herald.body_limit).pipeline}))
        self.errors: list[str] = []
        self.sent: Counter[str] = Counter()

    def send(self, action: str, event_id: str, value: bytes) -> None:
        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.sent[action] += 1

        while True:
            try:
                self.producer.produce(self.topics.action(action), key=event_id.encode(), value=value,
                                      on_delivery=on_delivery)
                break
            except BufferError:
                self.producer.poll(0.5)
        self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(30)
        if left or self.errors:
            raise KafkaUnavailableError(f"{left + len(self.errors)} message(s) were not acknowledged by Kafka"
                                        + (f": {self.errors[0]}" if self.errors else ""))


def add_arguments(sp: argparse.ArgumentParser) -> None:
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--since", help="window start on the events topic: 2h, 30m, RFC 3339, or 'all'")
    src.add_argument("--from-file", help="JSON Lines of events (or of `herald timeline` rows); '-' for stdin")
    sp.add_argument("--until", help="window end (default now)")
    sp.add_argument("--dry-run", action="store_true", default=True, help="route and render, send nothing (default)")
    sp.add_argument("--diff", metavar="OTHER_CFG", help="compare routing with another config on the same events")
    sp.add_argument("--to-actions", metavar="A,B", help="really send the messages for these actions (needs --yes)")
    sp.add_argument("--yes", action="store_true", help="confirm --to-actions")
    sp.add_argument("--format", choices=("text", "json"), default="text")


def _print_text(config_path: str, tally: Tally, notes: list[str], sent: Counter[str] | None) -> None:
    mode = "sent" if sent is not None else "would fire (dry run: nothing sent)"
    print(f"replay of {tally.events} event(s) through {config_path}"
          + (f"; {tally.unparseable} not JSON objects" if tally.unparseable else ""))
    print(f"\n{'route':<32} {'events matched':>14}")
    for name, n in sorted(tally.routes.items()):
        print(f"{name:<32} {n:>14}")
    print(f"\n{'route/action':<48} {mode}")
    for name, n in sorted(tally.route_actions.items()):
        print(f"{name:<48} {n}")
    print(f"\n{'action':<32} {'messages':>10}")
    for name, n in sorted((sent if sent is not None else tally.actions).items()):
        print(f"{name:<32} {n:>10}")
    for route, n in sorted(tally.stateful.items()):
        print(f"route {route}: {n} event(s) go to its dedup/aggregation stage (sends depend on its state)")
    for route, n in sorted(tally.failures.items()):
        print(f"route {route}: {n} event(s) would be dead-lettered by the router")
    for note in notes:
        print(f"note: {note}")


def run_cli(args: argparse.Namespace, config: Config, load: Callable[[str], Config]) -> int:
    """``load`` reads the --diff config (the CLI passes actions.load_config)."""
    from app.forensics.timeline import window_from_args

    if args.diff and args.to_actions:
        raise HeraldError("--diff compares configs without sending; do not combine it with --to-actions")
    targets: set[str] = set()
    if args.to_actions:
        targets = {a.strip() for a in args.to_actions.split(",") if a.strip()}
        unknown = sorted(targets - set(config.actions))
        if unknown:
            raise HeraldError(f"--to-actions: unknown or disabled action(s) {', '.join(unknown)}; "
                              f"enabled actions in {config.path}: {', '.join(sorted(config.actions)) or 'none'}")
        if not args.yes:
            raise HeraldError(f"--to-actions {','.join(sorted(targets))} sends the replayed messages for real; "
                              "add --yes to confirm (or drop --to-actions for a dry run)")
    if args.from_file:
        events = events_from_file(args.from_file)
    else:
        events = events_from_kafka(config, *window_from_args(args.since, args.until))
    router = Router(config)
    for err in router.errors:
        print(f"warning: {config.path}: {err}", file=sys.stderr)
    notes = [f"route {n} uses dedup/aggregation plugins, which the worker applies after routing; counts here "
             "are before them" for n, r in config.routes.items()
             if r.plugins.unique_message_props or r.plugins.aggregate_message_number
             or r.plugins.aggregate_message_timeout]
    tally = Tally()
    if args.diff:
        other_cfg = load(args.diff)
        other = Router(other_cfg)
        tally_b, changed = Tally(), []
        for ev in events:
            a, b = route_one(router, ev), route_one(other, ev)
            tally.add(a)
            tally_b.add(b)
            diff = compare(ev, a, b)
            if diff is not None:
                changed.append(diff)
        report = {"a": {"config": config.path, **tally.to_dict()}, "b": {"config": other_cfg.path, **tally_b.to_dict()},
                  "changed": changed}
        if args.format == "json":
            sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
        else:
            print(f"{len(changed)} of {tally.events} event(s) are routed or rendered differently "
                  f"by {other_cfg.path} than by {config.path}")
            for d in changed:
                parts = [f"{k.replace('_', ' ')}: {', '.join(v)}" for k, v in d.items() if k != "event_id" and v]
                print(f"{d['event_id']}  " + "; ".join(parts))
        return 0
    sender = ActionSender(config) if targets else None
    for ev in events:
        result = route_one(router, ev)
        tally.add(result)
        if sender is not None and result is not None:
            for message in result.messages:
                if message.action in targets:
                    sender.send(message.action, message.event_id, message.to_json())
    if sender is not None:
        sender.flush()
    if args.format == "json":
        out = {"config": config.path, "dry_run": sender is None, **tally.to_dict(), "notes": notes}
        if sender is not None:
            out["sent"] = dict(sorted(sender.sent.items()))
        sys.stdout.write(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_text(config.path, tally, notes, sender.sent if sender is not None else None)
    return 0
