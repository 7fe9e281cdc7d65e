"""Prometheus metrics of the bridge and the worker: every definition is here.

Each process (bridge, worker) serves its own registry, ``REGISTRY``, on ``GET /metrics``
(``metrics_handler``): the bridge on its HTTP listener, the worker on its admin listener. Labels
come from the config only (route and action names, topic names, partition numbers, endpoint
templates, status codes): an event field never becomes a label, so the label sets are bounded.

Delivery outcomes (``herald_deliveries_total{action,outcome}``):

- ``delivered``: a message delivered (once per message);
- ``dead_lettered``: a message given up and written to ``dlq.<action>`` (once per message);
- ``duplicate_suppressed``: a message already delivered before (read again after a rebalance or
  a crash), not sent again (once per message);
- ``failed``: an attempt that failed (once per failed attempt, retried or not);
- ``retried``: an attempt after the first (once per retry).

So ``delivered + dead_lettered + duplicate_suppressed`` counts the action's messages.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
PlatformCollector(registry=REGISTRY)

# seconds: an HTTP answer or a Kafka acknowledgement takes milliseconds, a delivery up to a timeout
_FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SLOW = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)

# -- bridge ---------------------------------------------------------------------------------------
BRIDGE_ENDPOINTS = ("/", "/scan", "/tenant/{route}")

bridge_requests = Counter(
    "herald_bridge_requests", "Events posted to the bridge, by endpoint (route template) and answer status.",
    ["endpoint", "status"], registry=REGISTRY)
bridge_request_seconds = Histogram(
    "herald_bridge_request_duration_seconds", "Time from the request to the bridge's answer, by endpoint.",
    ["endpoint"], buckets=_FAST, registry=REGISTRY)
bridge_kafka_write_seconds = Histogram(
    "herald_bridge_kafka_write_duration_seconds",
    "Time from handing an event to the producer to Kafka's acknowledgement (acks=all), failures included.",
    buckets=_FAST, registry=REGISTRY)
bridge_spool_events = Gauge(
    "herald_bridge_spool_events", "Events in the bridge's disk spool waiting for Kafka (herald.spool).",
    registry=REGISTRY)
bridge_spool_bytes = Gauge(
    "herald_bridge_spool_bytes", "Bytes of events in the bridge's disk spool waiting for Kafka.", registry=REGISTRY)
bridge_spool_max_bytes = Gauge(
    "herald_bridge_spool_max_bytes", "The spool's bound (herald.spool.max-bytes); 0 when the spool is off.",
    registry=REGISTRY)


def watch_spool(spool: Any) -> None:
    """Spool gauges read ``spool`` (``app.ingest.spool.Spool``) at each scrape."""
    bridge_spool_events.set_function(lambda: spool.records)
    bridge_spool_bytes.set_function(lambda: spool.bytes)
    bridge_spool_max_bytes.set(spool.max_bytes)

# -- worker: router -------------------------------------------------------------------------------
router_events = Counter(
    "herald_router_events", "Events the router read from the events topic (dead-lettered ones included).",
    registry=REGISTRY)
route_events = Counter(
    "herald_route_events", "Events evaluated per route, by whether the route's filter matched.",
    ["route", "matched"], registry=REGISTRY)
filter_errors = Counter(
    "herald_filter_errors", "Route filters that failed to evaluate (the route does not match).",
    ["route"], registry=REGISTRY)
template_errors = Counter(
    "herald_template_errors", "Templates that failed to render an event or an aggregated batch (dead-lettered).",
    ["route"], registry=REGISTRY)
action_messages = Counter(
    "herald_action_messages", "Messages written to an action's topic (one per event, or per aggregated batch).",
    ["action"], registry=REGISTRY)
dedup_hits = Counter(
    "herald_dedup_hits", "Events dropped as duplicates by a route's unique-message-props.", ["route"],
    registry=REGISTRY)
aggregation_batches = Counter(
    "herald_aggregation_batches", "Aggregated batches sent to a route's actions.", ["route"], registry=REGISTRY)

# -- worker: actions ------------------------------------------------------------------------------
DELIVERY_OUTCOMES = ("delivered", "failed", "retried", "duplicate_suppressed", "dead_lettered")

deliveries = Counter(
    "herald_deliveries",
    "Deliveries per action and outcome: delivered, dead_lettered, duplicate_suppressed (per message); "
    "failed (per failed attempt), retried (per attempt after the first).",
    ["action", "outcome"], registry=REGISTRY)
delivery_attempt_seconds = Histogram(
    "herald_delivery_attempt_duration_seconds", "Time one delivery attempt took (the call to the destination).",
    ["action"], buckets=_SLOW, registry=REGISTRY)
delivery_latency_seconds = Histogram(
    "herald_delivery_latency_seconds",
    "Time from the bridge receiving an event to its delivery by the action (retries and queueing included).",
    ["action"], buckets=_SLOW, registry=REGISTRY)
dead_letters = Counter(
    "herald_dead_letters", "Dead letters written, by stage (router, or the action's name).", ["stage"],
    registry=REGISTRY)

# -- worker: Kafka --------------------------------------------------------------------------------
consumer_lag = Gauge(
    "herald_consumer_lag_messages",
    "Messages of a partition assigned to this worker not yet committed (librdkafka statistics, every "
    "STATS_INTERVAL_MS).",
    ["topic", "partition"], registry=REGISTRY)
STATS_INTERVAL_MS = 5000

_lag_children: set[tuple[str, str]] = set()


def consumer_stats(stats_json: str, assigned: Iterable[tuple[str, int]]) -> None:
    """``stats_cb`` of the worker's consumer: the lag of each assigned partition (librdkafka's
    ``consumer_lag``: end offset minus committed offset; for a partition the group never committed,
    end minus low watermark; while the end is not known yet, the last value stays)."""
    try:
        _consumer_stats(orjson.loads(stats_json), set(assigned))
    except Exception:  # noqa: BLE001, S110 - an exception in stats_cb would surface in the consumer's poll
        pass


def _consumer_stats(stats: dict[str, Any], mine: set[tuple[str, int]]) -> None:
    seen: set[tuple[str, str]] = set()
    for topic, t in (stats.get("topics") or {}).items():
        for pid, p in (t.get("partitions") or {}).items():
            if (topic, int(pid)) not in mine:
                continue
            labels = (topic, pid)
            seen.add(labels)
            lag = p.get("consumer_lag", -1)
            if lag < 0 and p.get("committed_offset", -1) < 0:  # nothing committed yet: all of it is lag
                end = p.get("ls_offset", -1) if p.get("ls_offset", -1) >= 0 else p.get("hi_offset", -1)
                if end >= 0:
                    lag = end - max(p.get("lo_offset", -1), 0)
            if lag >= 0:
                consumer_lag.labels(*labels).set(lag)
    for labels in _lag_children - seen:  # partitions revoked since: no stale lag
        try:
            consumer_lag.remove(*labels)
        except KeyError:
            pass
    _lag_children.intersection_update(seen)
    _lag_children.update(seen)


# -- helpers called at the instrumented points ----------------------------------------------------
# ``metric.labels(...)`` validates the values and takes the metric's lock on every call (~5 us); the
# worker calls it several times per event. Children are looked up once and kept here (a dict lookup).
# A child is never removed from these metrics (only ``consumer_lag``'s are, which does not use this).
_children: dict[tuple[int, tuple[str, ...]], Any] = {}


def child(metric: Any, *values: str) -> Any:
    """``metric.labels(*values)``, cached."""
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    return found


def inc(metric: Any, *values: str, amount: float = 1) -> None:
    """``metric.labels(*values).inc(amount)`` through the cached child."""
    key = (id(metric), values)
    found = _children.get(key)
    if found is None:
        found = _children[key] = metric.labels(*values)
    found.inc(amount)


def observe_routing(result: Any) -> None:
    """One routed event (``app.routing.router.RoutingResult``)."""
    for route, verdict in result.verdicts.items():
        inc(route_events, route, "true" if verdict.matched else "false")
        if not verdict.matched and verdict.reason.startswith("error: "):
            inc(filter_errors, route)
    for failure in result.failures:
        if failure.error_type in ("TemplateError", "PolicyError"):
            inc(template_errors, failure.route)
    for message in result.messages:
        inc(action_messages, message.action)


def observe_attempt(action: str, outcome: Any) -> None:
    """One delivery attempt (``actions.runner.Outcome``)."""
    child(delivery_attempt_seconds, action).observe(outcome.latency)
    if not outcome.delivered:
        inc(deliveries, action, "failed")


def observe_delivery(action: str, outcome: Any, received_at: float) -> None:
    """A message done with: delivered or dead-lettered after ``outcome.attempts`` attempts."""
    if outcome.attempts > 1:
        inc(deliveries, action, "retried", amount=outcome.attempts - 1)
    if outcome.delivered:
        inc(deliveries, action, "delivered")
        if received_at > 0:
            child(delivery_latency_seconds, action).observe(max(0.0, outcome.last_attempt_at - received_at))
    else:
        inc(deliveries, action, "dead_lettered")


def init_worker(routes: Iterable[str], actions: Iterable[str]) -> None:
    """Zero the worker's counters of every configured route and action, so a scrape shows them (and
    ``rate()`` sees the first increment) before the first event."""
    for route in routes:
        for matched in ("true", "false"):
            route_events.labels(route, matched)
        for c in (filter_errors, template_errors, dedup_hits, aggregation_batches):
            c.labels(route)
    dead_letters.labels("router")
    for action in actions:
        action_messages.labels(action)
        dead_letters.labels(action)
        delivery_attempt_seconds.labels(action)
        delivery_latency_seconds.labels(action)
        for outcome in DELIVERY_OUTCOMES:
            deliveries.labels(action, outcome)


def init_bridge() -> None:
    for endpoint in BRIDGE_ENDPOINTS:
        bridge_request_seconds.labels(endpoint)


@web.middleware
async def bridge_middleware(request: web.Request,
                            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Count and time the bridge's event endpoints (by route template, never the raw path)."""
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else ""
    if request.method != "POST" or endpoint not in BRIDGE_ENDPOINTS:
        return await handler(request)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        inc(bridge_requests, endpoint, str(status))
        child(bridge_request_seconds, endpoint).observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the process's metrics in Prometheus' text exposition format."""
    return web.Response(body=generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


def exported_names() -> set[str]:
    """Every sample name this registry can export (``_total``, ``_bucket``, ``_sum``, ``_count``,
    ``_created`` included): what a dashboard query may name."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.add(family.name)
        names.update(s.name for s in family.samples)
        if family.type == "counter":
            names.update((family.name + "_total", family.name + "_created"))
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_sum", "_count", "_created"))
        elif family.type == "gauge":
            names.add(family.name)
    return names
