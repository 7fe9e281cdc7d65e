"""``herald timeline``: the events of a time window, per entity, in event-time order.

    events topic ──WindowReader──▶ parse, --where, entity, event time ──▶ ExternalSorter
        ──▶ (join HeraldLog by event id) ──▶ JSON Lines | CSV | HTML report

Memory stays bounded whatever the window holds: the reader streams (librdkafka's prefetch is
capped at ``PREFETCH_KIB``), the sorter keeps at most one run (``run_bytes`` of rows, 32 MiB by
default) plus one row per spilled run, the join index is an on-disk SQLite file, and the writers
stream. Rows are ordered by (entity, event time, Kafka time, partition, offset): the event time
comes from the event itself (app.forensics.eventtime), Kafka's timestamp is the fallback, both are kept.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from app.config.loader import Config
from app.forensics.entities import entity_extractor, severity_of, source_of, title_of
from app.errors import HeraldError, PolicyError
from app.forensics.eventtime import event_time_ns, format_ns, parse_when
from app.forensics.extsort import ExternalSorter
from app.forensics.heraldlog import HeraldLog, load_herald_log, summarize
from app.kafka.client import client_config
from app.kafka.window import Record, WindowReader
from app.routing.router import EventMeta
from app.kafka.topics import Topics

FORMATS = ("jsonl", "csv", "html")


class WhereFilter:
    """``--where``: a Rego expression compiled once as Postee compiles a route's ``input``."""

    def __init__(self, expression: str) -> None:
        from app.routing.policy.engine import EmbeddedEngine

        self.expression = expression
        self.engine = EmbeddedEngine(v0=True)
        source = f"package herald.where\n\ndefault allow = false\n\nallow {{\n{expression}\n}}\n"
        try:
            self.engine.add_module("where.rego", source)
        except PolicyError as exc:
            raise HeraldError(f"--where {expression!r} does not compile: {exc}") from None
        self.errors = 0
        self.first_error = ""

    def __call__(self, raw_json: str) -> bool:
        self.engine.set_input_json(raw_json)
        try:
            return self.engine.eval_rule("data.herald.where.allow") is True
        except PolicyError as exc:  # an evaluation error on one event excludes that event only
            self.errors += 1
            self.first_error = self.first_error or str(exc)
            return False


class Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty()
        self._last = 0.0

    def bar(self, label: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        width = 30
        frac = min(1.0, done / total) if total else 1.0
        filled = int(frac * width)
        self.stream.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({frac:.0%})\x1b[K")
        self.stream.flush()

    def note(self, text: str) -> None:
        if self.enabled:
            self.stream.write(f"\r{text}\x1b[K")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


@dataclass
class Stats:
    read: int = 0
    unparseable: int = 0
    filtered_out: int = 0
    rows: int = 0
    entities: int = 0
    from_event_time: int = 0
    runs: int = 0  # sorted runs spilled to disk
    joined: dict[str, int] = field(default_factory=dict)


def make_row(rec: Record, extract: Callable[[dict[str, Any]], str], where: WhereFilter | None,
             stats: Stats) -> dict[str, Any] | None:
    """One timeline row for a Kafka record, or None when it is not a JSON object or filtered out."""
    stats.read += 1
    try:
        event = orjson.loads(rec.value)
    except orjson.JSONDecodeError:
        event = None
    if not isinstance(event, dict):
        stats.unparseable += 1
        return None
    if where is not None and not where(rec.value.decode("utf-8", "replace")):
        stats.filtered_out += 1
        return None
    meta = EventMeta.from_headers(rec.headers, f"{rec.topic}-{rec.partition}-{rec.offset}", rec.timestamp_ms / 1000)
    kafka_ns = rec.timestamp_ms * 1_000_000
    ns, time_field = event_time_ns(event)
    if ns is not None:
        stats.from_event_time += 1
    source = source_of(event)
    return {
        "event_id": meta.event_id,
        "entity": extract(event),
        "event_time": format_ns(ns if ns is not None else kafka_ns),
        "event_time_ns": ns if ns is not None else kafka_ns,
        "event_time_from": time_field or "kafka",
        "kafka_time": format_ns(kafka_ns),
        "kafka_time_ns": kafka_ns,
        "source": source,
        "severity": severity_of(event, source),
        "title": title_of(event, source),
        "route": meta.route,
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "event": event,
    }


def sort_key(row: dict[str, Any]) -> list[Any]:
    return [row["entity"], row["event_time_ns"], row["kafka_time_ns"], row["partition"], row["offset"]]


@dataclass
class TimelineQuery:
    kafka: Mapping[str, Any] | str  # client config (app.kafka.client.client_config)
    topics: Topics
    since_ns: int | None
    until_ns: int | None
    where: str | None = None
    by: str | None = None
    with_decisions: bool = False
    run_bytes: int = 32 * 1024 * 1024
    limit: int | None = None  # stop after this many records read (benchmarks)


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // 1_000_000


def timeline_rows(q: TimelineQuery, stats: Stats, progress: Progress | None = None) -> Iterator[dict[str, Any]]:
    """The ordered rows of a timeline, streamed."""
    where = WhereFilter(q.where) if q.where else None
    extract = entity_extractor(q.by)
    reader = WindowReader(q.kafka, q.topics.events, _ms(q.since_ns), _ms(q.until_ns))
    total = reader.total if q.limit is None else min(reader.total, q.limit)
    sorter = ExternalSorter(run_bytes=q.run_bytes)
    herald_log: HeraldLog | None = None
    try:
        for rec in reader.records():
            row = make_row(rec, extract, where, stats)
            if row is not None:
                sorter.add(sort_key(row), orjson.dumps(row))
            if progress is not None:
                progress.bar("reading events", stats.read, total)
            if q.limit is not None and stats.read >= q.limit:
                break
        reader.close()
        if where is not None and where.errors:
            print(f"warning: --where failed on {where.errors} event(s), which were left out: {where.first_error}",
                  file=sys.stderr)
        if q.with_decisions:
            herald_log = load_herald_log(q.kafka, q.topics, _ms(q.since_ns),
                                         progress.note if progress is not None else None)
            stats.joined = dict(herald_log.counts)
        stats.runs = len(sorter.runs)
        entity: str | None = None
        for i, (_, payload) in enumerate(sorter.sorted()):
            row = orjson.loads(payload)
            if row["entity"] != entity:
                entity = row["entity"]
                stats.entities += 1
            if herald_log is not None:
                row["herald"] = herald_log.lookup(row["event_id"])
            stats.rows += 1
            if progress is not None:
                progress.bar("writing timeline", i + 1, sorter.count)
            yield row
    finally:
        reader.close()
        sorter.close()
        if herald_log is not None:
            herald_log.close()
        if progress is not None:
            progress.done()


CSV_COLUMNS = ("entity", "event_time", "kafka_time", "event_time_from", "event_id", "source", "severity", "title",
               "topic", "partition", "offset", "routes_matched", "actions", "delivered", "dead_letters", "attempts",
               "event")


def write_jsonl(rows: Iterator[dict[str, Any]], out: IO[bytes]) -> None:
    for row in rows:
        out.write(orjson.dumps(row) + b"\n")


def write_csv(rows: Iterator[dict[str, Any]], out: IO[bytes], with_decisions: bool) -> None:
    import io

    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    columns = [c for c in CSV_COLUMNS if with_decisions or c not in
               ("routes_matched", "actions", "delivered", "dead_letters", "attempts")]
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        flat = {**row, **(summarize(row["herald"]) if "herald" in row else {}),
                "event": orjson.dumps(row["event"]).decode()}
        writer.writerow([flat.get(c, "") for c in columns])
    text.flush()
    text.detach()


def add_arguments(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--since", required=True,
                    help="window start: relative age (2h, 30m, 7d), RFC 3339, or 'all' (Kafka timestamps)")
    sp.add_argument("--until", default=None, help="window end: relative age or RFC 3339 (default: now)")
    sp.add_argument("--where", default=None, help="Rego expression on input, e.g. 'input.SigMetadata.Properties.Severity >= 2'")
    sp.add_argument("--by", default=None,
                    help="group by host, container, pod, image, namespace or a path such as 'output_fields[\"k8s.ns.name\"]'")
    sp.add_argument("--format", default="jsonl", choices=FORMATS)
    sp.add_argument("--with-decisions", action="store_true",
                    help="join what Herald did: decisions, delivery attempts and dead letters")
    sp.add_argument("--out", "-o", default="-", help="output file (default stdout)")
    sp.add_argument("--run-mib", type=int, default=32, help="rows held in memory before spilling a sorted run, MiB")


def window_from_args(since: str, until: str | None) -> tuple[int | None, int | None]:
    now = time.time_ns()
    since_ns = None if since.strip().lower() in ("all", "beginning") else parse_when(since, "--since", now)
    until_ns = parse_when(until, "--until", now) if until else None
    if since_ns is not None and until_ns is not None and until_ns < since_ns:
        raise HeraldError(f"--until {until!r} is before --since {since!r}")
    return since_ns, until_ns


def run_cli(args: argparse.Namespace, config: Config) -> int:
    since_ns, until_ns = window_from_args(args.since, args.until)
    if args.run_mib < 1:
        raise HeraldError(f"--run-mib must be at least 1, got {args.run_mib}")
    query = TimelineQuery(
        kafka=client_config(config.herald), topics=Topics(config.herald.topic_prefix),
        since_ns=since_ns, until_ns=until_ns, where=args.where, by=args.by,
        with_decisions=args.with_decisions, run_bytes=args.run_mib * 1024 * 1024,
    )
    stats = Stats()
    progress = Progress()
    rows = timeline_rows(query, stats, progress)
    out: IO[bytes] = sys.stdout.buffer if args.out == "-" else open(args.out, "wb")  # noqa: SIM115 - finally
    try:
        if args.format == "jsonl":
            write_jsonl(rows, out)
        elif args.format == "csv":
            write_csv(rows, out, args.with_decisions)
        else:
            from app.forensics.report_html import write_html

            write_html(rows, out, query, stats)
        out.flush()
    except BrokenPipeError:  # `herald timeline ... | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        if out is not sys.stdout.buffer:
            out.close()
    print(f"timeline: {stats.rows} event(s) in {stats.entities} lane(s) from {stats.read} record(s) "
          f"({stats.filtered_out} filtered out, {stats.unparseable} not JSON objects); "
          f"event time from the event for {stats.from_event_time}, Kafka time for the rest"
          + (f"; joined {stats.joined}" if stats.joined else ""), file=sys.stderr)
    return 0


def bench_read(kafka: Mapping[str, Any] | str, prefix: str, n: int, by: str = "host", run_mib: int = 32) -> float:
    """Events per second for a timeline over the first ``n`` events of ``<prefix>events``: read,
    parse, event time, entity, external sort and JSON Lines output (to /dev/null)."""
    query = TimelineQuery(kafka, Topics(prefix), None, None, by=by, run_bytes=run_mib * 1024 * 1024,
                          limit=n)
    stats = Stats()
    started = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        write_jsonl(timeline_rows(query, stats), sink)
    elapsed = time.perf_counter() - started
    if stats.read < n:
        raise HeraldError(f"bench_read: {prefix}events holds {stats.read} events, fewer than the {n} asked for")
    return stats.read / elapsed if elapsed > 0 else float("inf")
