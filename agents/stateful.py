"""The route-state stage: dedup and aggregation, with their state in a compacted Kafka topic.

Events of routes with ``unique-message-props`` or aggregation go through ``<prefix>route.state``,
keyed by route (and dedup key), so all events that share state land on one partition. The state
of partition *p* lives in memory and in partition *p* of ``<prefix>route.state.changelog``
(compacted: the newest value of each key, a tombstone for a flushed batch); a worker that is
assigned *p* reads it back before the partition's first message. A timer sends ``tick`` messages
every second, so timed batches flush after a restart even when no new event comes.

Crash safety: a message's changelog records are written only after the records it emitted are
acknowledged, in the order of the messages, and the message is finished (its offset committable)
only after that. So the changelog never claims an emission that might be lost. A message read
again after a crash may find its own state change already in the changelog: dedup entries carry
the offset of the message that set them (that message is not its own duplicate), and a batch
keeps its event ids (an event is never added twice).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from app.telemetry import logformat, metrics
from app.content import Content
from app.errors import HeraldError, KafkaUnavailableError
from app.kafka.window import WindowReader
from app.messages import ActionMessage
from app.routing.state import Batch

if TYPE_CHECKING:
    from agents.kafkaio import KafkaIO, Ticket
    from app.config.loader import Config
    from app.routing.router import Router

log = logging.getLogger("herald.state")

TICK_INTERVAL = 1.0
_SEP = "\x1f"

Write = tuple[str, Any]  # changelog key, value (None: delete)


class Pipeline(Protocol):
    """What the route-state stage needs of the worker that runs it (``agents.worker.Worker``):
    the running config and router, the Kafka I/O, and the worker's way to produce, emit to
    actions, record decisions and dead-letter."""

    config: Config
    router: Router
    io: KafkaIO
    kafka_conf: dict[str, Any]

    def produce(self, topic: str, key: str, value: bytes | None, ticket: Ticket | None,
             partition: int | None = None) -> None: ...

    def emit(self, message: ActionMessage, ticket: Ticket) -> None: ...

    def record_decision(self, record: dict[str, Any], ticket: Ticket) -> None: ...

    def dead_letter(self, stage: str, ticket: Ticket, error: str, error_type: str, *, event_id: str = "",
                    attempts: int = 0, original: Any = None, outcome: Any = None) -> None: ...


class RouteState:
    def __init__(self, worker: Pipeline, topic: str, changelog: str) -> None:
        self.w = worker
        self.topic = topic
        self.changelog = changelog
        self.routes: dict[str, Any] = {}
        self.timed: list[str] = []
        self.refresh()
        self.tables: dict[int, dict[str, Any]] = {}
        self._load_lock = asyncio.Lock()
        self._pending: dict[int, deque[tuple[Ticket, list[Write]]]] = {}
        self._pending_wake = asyncio.Event()
        self.duplicates = 0

    def refresh(self) -> None:
        """Take the worker's current router (at start, and after a reload). Routes that aggregated
        and no longer do get a ``flush`` message: their pending batch is sent, not forgotten."""
        router = self.w.router
        before = [n for n in self.routes if n in getattr(self, "_aggregating", set())]
        self.routes = router.stateful_routes
        self._aggregating = {n for n, r in self.routes.items() if router.aggregates(r)}
        self.timed = [n for n in self._aggregating if self.routes[n].aggregate_timeout]
        for name in before:
            if name not in self._aggregating:
                self.w.produce(self.topic, name, orjson.dumps({"kind": "flush", "route": name}), None)

    @staticmethod
    def partition_key(item: dict[str, Any], aggregates: bool) -> str:
        return item["route"] if aggregates else f"{item['route']}{_SEP}{item['dedup_key']}"

    def submit(self, item: dict[str, Any], ticket: Ticket) -> None:
        key = self.partition_key(item, self.w.router.aggregates(self.routes[item["route"]]))
        self.w.produce(self.topic, key, orjson.dumps(item), ticket)

    def background_tasks(self) -> list[asyncio.Task[None]]:
        # ticks run even without timed routes: a reload may add one
        return [asyncio.create_task(self._write_changelog(), name="route-state-changelog"),
                asyncio.create_task(self._ticks(), name="route-state-ticks")]

    async def _ticks(self) -> None:
        while True:
            await asyncio.sleep(TICK_INTERVAL)
            for route in self.timed:
                self.w.produce(self.topic, route, orjson.dumps({"kind": "tick", "route": route}), None)

    # -- partitions ---------------------------------------------------------------------------
    def assigned(self, partitions: list[int]) -> None:
        for p in partitions:  # read back before the first message (in handle)
            self.tables.pop(p, None)

    def revoked(self, partitions: list[int]) -> None:
        for p in partitions:
            self.tables.pop(p, None)
            self._pending.pop(p, None)  # stale tickets: the next owner processes them again

    def _load(self, partition: int) -> dict[str, Any]:
        """The partition's state from the changelog (blocking; run in an executor)."""
        table: dict[str, Any] = {}
        for rec in WindowReader(self.w.kafka_conf, self.changelog, None, None,
                                30.0, [partition]):
            if rec.key is None:
                continue
            key = rec.key.decode()
            if rec.value:
                table[key] = orjson.loads(rec.value)
            else:
                table.pop(key, None)
        return table

    async def _table(self, partition: int) -> dict[str, Any]:
        """The partition's table, read back first if needed. A failed read is retried (the message
        waits: without its state the stage would forget dedup keys or batches)."""
        table = self.tables.get(partition)
        if table is not None:
            return table
        delay = 0.2
        async with self._load_lock:
            while partition not in self.tables:
                try:
                    loaded = await asyncio.get_running_loop().run_in_executor(None, self._load, partition)
                except KafkaUnavailableError as exc:
                    log.warning("route-state: cannot read %s[%d] yet (retrying in %.1fs): %s",
                                self.changelog, partition, delay, exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                now = time.time()
                expired = [k for k, v in loaded.items() if k.startswith("d" + _SEP) and 0 < v["exp"] <= now]
                for key in expired:  # expired dedup keys: delete them from the changelog too
                    del loaded[key]
                    self.w.produce(self.changelog, key, None, None, partition=partition)
                self.tables[partition] = loaded
                log.info("route-state: %d entries of partition %d read back", len(loaded), partition)
        return self.tables[partition]

    # -- messages -----------------------------------------------------------------------------
    async def handle(self, ticket: Ticket) -> None:
        """Process one route.state message; finishes ``ticket`` itself (after its changelog)."""
        table = await self._table(ticket.partition)
        item = orjson.loads(ticket.value)
        logformat.bind(event_id=item.get("event_id"), route=item.get("route"))
        writes: list[Write] = []
        self._apply(item, table, ticket, writes)
        if writes:
            self._pending.setdefault(ticket.partition, deque()).append((ticket, writes))
            self._pending_wake.set()
        else:
            self.w.io.done(ticket)

    def _apply(self, item: dict[str, Any], table: dict[str, Any], ticket: Ticket, writes: list[Write]) -> None:
        name = item["route"]
        route = self.routes.get(name)
        bkey = f"b{_SEP}{name}"
        if route is None or (item["kind"] == "flush" and name not in self._aggregating):
            # a reload changed the route since this was written
            self._orphan(item, table, ticket, writes)
            return
        now = time.time()
        if item["kind"] == "tick":
            batch = Batch.from_dict(table.get(bkey))
            if batch.due(route.aggregate_timeout, now):
                self._flush(name, batch, table, ticket, writes)
            return
        if item["dedup_key"]:
            key = f"d{_SEP}{name}{_SEP}{item['dedup_key']}"
            entry = table.get(key)
            if (entry is not None and entry["src"] != ticket.offset
                    and (entry["exp"] == 0 or entry["exp"] > now)):
                self.duplicates += 1
                metrics.inc(metrics.dedup_hits, name)
                self._record(item["event_id"], name, "duplicate", item["dedup_key"], ticket)
                return
            ttl = route.unique_timeout
            entry = {"exp": now + ttl if ttl else 0, "src": ticket.offset}
            table[key] = entry
            writes.append((key, entry))
        content = Content.from_dict(item["content"])
        if not self.w.router.aggregates(route):
            self.w.emit(ActionMessage(item["event_id"], name, "", content, item.get("event"), item["received_at"]),
                        ticket)
            return
        batch = Batch.from_dict(table.get(bkey))
        if item["event_id"] not in batch.event_ids:  # not when read again after a crash
            batch.add(item["event_id"], content, now, item.get("received_at") or 0.0)
            self._record(item["event_id"], name, "aggregated", batch.aggregate_id(), ticket)
        number = route.plugins.aggregate_message_number
        if number and len(batch.items) >= number:
            self._flush(name, batch, table, ticket, writes)
        else:
            table[bkey] = batch.to_dict()
            writes.append((bkey, table[bkey]))

    def _orphan(self, item: dict[str, Any], table: dict[str, Any], ticket: Ticket, writes: list[Write]) -> None:
        """A message of a route that a reload changed: it lost dedup/aggregation, or is gone."""
        name = item["route"]
        bkey = f"b{_SEP}{name}"
        batch = Batch.from_dict(table.get(bkey))
        if batch.items and item["kind"] in ("tick", "flush"):
            # the pending batch of a route that no longer aggregates: its events go out one by one
            # (the route's current actions), or become dead letters when the route is gone
            table.pop(bkey, None)
            writes.append((bkey, None))
            for event_id, content in zip(batch.event_ids, batch.contents()):
                self._pass_on(name, event_id, content, None, batch.started_at, ticket,
                              "its pending aggregation batch was sent")
            return
        if item["kind"] != "event":
            return  # a tick, or a flush with nothing pending
        self._pass_on(name, item["event_id"], Content.from_dict(item["content"]), item.get("event"),
                      item.get("received_at") or 0.0, ticket, "it reached the dedup/aggregation stage")

    def _pass_on(self, name: str, event_id: str, content: Content, event: Any, received_at: float,
                 ticket: Ticket, when: str) -> None:
        route = self.w.config.routes.get(name)
        if route is None:
            self.w.dead_letter("router", ticket, f"route {name} was removed by a config reload before {when}",
                               "ConfigReload", event_id=event_id,
                               original=orjson.dumps({"route": name, "event_id": event_id,
                                                      "content": content.to_dict(), "event": event}).decode())
            return
        log.info("route-state: route %s no longer has dedup or aggregation (config reload); event %s passed on",
                 name, event_id)
        self._record(event_id, name, "passed-on", "route changed by a config reload", ticket)
        self.w.emit(ActionMessage(event_id, name, "", content, event, received_at), ticket)

    def _flush(self, name: str, batch: Batch, table: dict[str, Any], ticket: Ticket, writes: list[Write]) -> None:
        bkey = f"b{_SEP}{name}"
        table.pop(bkey, None)
        writes.append((bkey, None))
        template = self.w.router.templates[self.routes[name].template]
        try:
            content = template.aggregate(batch.contents())
        except HeraldError as exc:  # Postee sent empty content; Herald dead-letters the batch
            metrics.inc(metrics.template_errors, name)
            self.w.dead_letter("router", ticket, f"route {name}: aggregate of {len(batch.items)} events failed: {exc}",
                               type(exc).__name__, event_id=batch.aggregate_id(),
                               original=orjson.dumps(batch.to_dict()).decode())
            return
        content.owners = batch.owners()
        metrics.inc(metrics.aggregation_batches, name)
        message = ActionMessage(batch.aggregate_id(), name, "", content, None, time.time(), aggregated=len(batch.items))
        self.w.emit(message, ticket)

    def _record(self, event_id: str, route: str, outcome: str, detail: str, ticket: Ticket) -> None:
        self.w.record_decision({"event_id": event_id, "kind": "route-state", "route": route, "outcome": outcome,
                                "detail": detail, "time": time.time()}, ticket)

    async def _write_changelog(self) -> None:
        """Write each message's state changes once its emitted records are acknowledged, in order."""
        while True:
            if not any(self._pending.values()):
                self._pending_wake.clear()
                await self._pending_wake.wait()
                continue
            for partition, queue in list(self._pending.items()):
                while queue and queue[0][0].all_acked():
                    ticket, writes = queue.popleft()
                    for key, value in writes:
                        self.w.produce(self.changelog, key, None if value is None else orjson.dumps(value), ticket,
                                    partition=partition)
                    self.w.io.done(ticket)
            await asyncio.sleep(0.002)
