"""The route-state stage: dedup and aggregation in changelog-backed faust tables.

Events of routes with ``unique-message-props`` or aggregation go through
``<prefix>route.state``, keyed by route (and dedup key), so all events that share state land on one
partition and its table shard moves with it on a rebalance. A timer sends ``tick`` messages
every second, so timed batches flush after a restart even when no new event comes (tables can
only be changed while processing a message, hence ticks rather than flushing from the timer).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import faust
import orjson

from app.content import Content
from app.errors import HeraldError
from app.messages import ActionMessage
from app.state import Batch

if TYPE_CHECKING:
    from agents.worker import Worker

log = logging.getLogger("herald.state")

TICK_INTERVAL = 1.0


class RouteState:
    def __init__(self, worker: Worker) -> None:
        self.w = worker
        app = worker.app
        parts = worker.config.herald.partitions
        self.dedup = app.Table("herald-dedup", default=None, partitions=parts)
        self.batches = app.Table("herald-batches", default=None, partitions=parts)
        self.topic = app.topic(worker.topics.route_state, value_serializer="raw", key_serializer="raw", internal=False)
        self.routes = worker.router.stateful_routes
        self.timed = [n for n, r in self.routes.items() if worker.router.aggregates(r) and r.aggregate_timeout]
        app.agent(self.topic, name="herald.route-state")(self._agent)
        if self.timed:
            app.timer(TICK_INTERVAL, name="herald.route-state-ticks")(self._tick)
        self.duplicates = 0

    @staticmethod
    def partition_key(item: dict[str, Any], aggregates: bool) -> str:
        return item["route"] if aggregates else f"{item['route']}\x1f{item['dedup_key']}"

    async def submit(self, item: dict[str, Any]) -> None:
        route = self.routes[item["route"]]
        key = self.partition_key(item, self.w.router.aggregates(route))
        await self.w.send(self.topic, key, orjson.dumps(item))

    async def _tick(self) -> None:
        for route in self.timed:
            await self.w.send(self.topic, route, orjson.dumps({"kind": "tick", "route": route}))

    async def _agent(self, stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            try:
                await self.handle(orjson.loads(event.value), msg.topic, msg.partition, msg.offset)
            except Exception as exc:  # nothing escapes the agent loop
                log.exception("route-state failed on offset %s", msg.offset)
                await self.w.router_dead_letter(f"{type(exc).__name__}: {exc}", "InternalError", "",
                                                event.value, msg.topic, msg.partition, msg.offset)

    async def handle(self, item: dict[str, Any], topic: str, partition: int, offset: int) -> None:
        name = item["route"]
        route = self.routes.get(name)
        if route is None:  # the config changed since this was written
            log.warning("route-state: route %s no longer has dedup or aggregation; dropped %s", name, item.get("kind"))
            return
        now = time.time()
        if item["kind"] == "tick":
            batch = Batch.from_dict(self.batches.get(name))
            if batch.due(route.aggregate_timeout, now):
                await self.flush(name, batch, topic, partition, offset)
            return
        if item["dedup_key"]:
            key = f"{name}\x1f{item['dedup_key']}"
            expiry = self.dedup.get(key)
            if expiry is not None and (expiry == 0 or expiry > now):
                self.duplicates += 1
                await self._record(item["event_id"], name, "duplicate", item["dedup_key"])
                return
            ttl = route.unique_timeout
            self.dedup[key] = now + ttl if ttl else 0
        content = Content.from_dict(item["content"])
        if not self.w.router.aggregates(route):
            await self.w.emit(ActionMessage(item["event_id"], name, "", content, item.get("event"), item["received_at"]))
            return
        batch = Batch.from_dict(self.batches.get(name))
        batch.add(item["event_id"], content, now, item.get("received_at") or 0.0)
        await self._record(item["event_id"], name, "aggregated", batch.aggregate_id())
        number = route.plugins.aggregate_message_number
        if number and len(batch.items) >= number:
            await self.flush(name, batch, topic, partition, offset)
        else:
            self.batches[name] = batch.to_dict()

    async def flush(self, name: str, batch: Batch, topic: str, partition: int, offset: int) -> None:
        route = self.routes[name]
        self.batches[name] = None
        template = self.w.router.templates[route.template]
        try:
            content = template.aggregate(batch.contents())
        except HeraldError as exc:  # Postee sent empty content; Herald dead-letters the batch
            await self.w.router_dead_letter(
                f"route {name}: aggregate of {len(batch.items)} events failed: {exc}", type(exc).__name__,
                batch.aggregate_id(), orjson.dumps(batch.to_dict()), topic, partition, offset,
            )
            return
        content.owners = batch.owners()
        message = ActionMessage(batch.aggregate_id(), name, "", content, None, time.time(), aggregated=len(batch.items))
        await self.w.emit(message)

    async def _record(self, event_id: str, route: str, outcome: str, detail: str) -> None:
        record = {"event_id": event_id, "kind": "route-state", "route": route, "outcome": outcome,
                  "detail": detail, "time": time.time()}
        await self.w.send(self.w.decisions, event_id, orjson.dumps(record))
