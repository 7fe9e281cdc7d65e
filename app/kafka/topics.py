"""Every topic name, derived in one place from the configured prefix (default ``herald.``).

    <prefix>events                  raw events (bridge or any producer)
    <prefix>action.<name>           one per enabled action: messages for it
    <prefix>dlq.<name>              one per enabled action: dead letters
    <prefix>dlq.router              events the router could not route or render
    <prefix>decisions               one record per routed event (what matched and why)
    <prefix>deliveries              one record per delivery attempt outcome
    <prefix>delivered.<name>        idempotency keys delivered by an action (1 h retention)
    <prefix>route.state             events of routes with dedup or aggregation, keyed by route
    <prefix>route.state.changelog   dedup and aggregation state (compacted; same partitions as route.state)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe(name: str) -> str:
    """Kafka topic names allow [A-Za-z0-9._-]; anything else in an action name becomes '_'."""
    return _UNSAFE.sub("_", name)


@dataclass(frozen=True)
class Topics:
    prefix: str = "herald."

    @property
    def events(self) -> str:
        return f"{self.prefix}events"

    @property
    def router_dlq(self) -> str:
        return f"{self.prefix}dlq.router"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}decisions"

    @property
    def deliveries(self) -> str:
        return f"{self.prefix}deliveries"

    def action(self, name: str) -> str:
        return f"{self.prefix}action.{safe(name)}"

    def dlq(self, name: str) -> str:
        return f"{self.prefix}dlq.{safe(name)}"

    @property
    def route_state(self) -> str:
        return f"{self.prefix}route.state"

    @property
    def route_state_changelog(self) -> str:
        return f"{self.prefix}route.state.changelog"

    def delivered(self, name: str) -> str:
        return f"{self.prefix}delivered.{safe(name)}"

    def all_for(self, action_names: list[str]) -> list[str]:
        names = [self.events, self.router_dlq, self.decisions, self.deliveries, self.route_state,
                 self.route_state_changelog]
        for a in action_names:
            names += [self.action(a), self.dlq(a), self.delivered(a)]
        return names


# -- one size limit end to end ----------------------------------------------------------------------
#
#   herald.body-limit  <=  producer message.max.bytes  <=  topic max.message.bytes
#
# The events topic carries the raw body plus the bridge's headers (event id, times, source, route,
# user agent): ``body + RECORD_MARGIN``. Every other topic carries records derived from an event:
# an action message holds the event and the rendered content (a raw-json or raw-html template
# renders the whole event again: 2.2x a 500 KB Aqua scan), a dead letter holds the event as a JSON
# string (escaping: at most 2x), a route-state record the event and its metadata. Those topics and
# the worker's producer take ``EXPANSION * body + RECORD_MARGIN``; a template that renders more than
# that for an event gives a dead letter naming the size, never a lost event.
RECORD_MARGIN = 64 * 1024
EXPANSION = 4


@dataclass(frozen=True)
class SizeLimits:
    """The record sizes a bridge body limit implies for each topic and producer."""

    body: int

    @property
    def event(self) -> int:
        """Largest record on the events topic (the bridge's producer limit)."""
        return self.body + RECORD_MARGIN

    @property
    def pipeline(self) -> int:
        """Largest record on every other topic (the worker's producer limit)."""
        return EXPANSION * self.body + RECORD_MARGIN

    def of(self, topics: Topics, name: str) -> int:
        return self.event if name == topics.events else self.pipeline

    def per_topic(self, topics: Topics, names: list[str]) -> dict[str, int]:
        """``max.message.bytes`` each topic of ``names`` needs."""
        return {n: self.of(topics, n) for n in names}
