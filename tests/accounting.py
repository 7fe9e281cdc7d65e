"""Exact accounting for the crash tests: what reached the sink, what is on the topics, what is done.

Helpers the end-to-end crash tests share (candidates for ``tests/harness.py``):

- ``wait_all_delivered`` / ``assert_counts``: every acknowledged event delivered (lost = 0), nothing
  that was never posted, duplicates within a stated bound; failures name the missing numbers;
- ``wait_records``: records of a topic that satisfy a condition, with a clear timeout message
  (works whether or not ``read_topic`` raises on ``min_count``: it never passes one);
- ``wait_processed``: the consumer group has committed past every record on the given topics, i.e.
  what the worker did so far is durable and a crash now replays nothing;
- ``event_of``: the event id a webhook delivery belongs to (from its ``Idempotency-Key``).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import yaml

from tests.harness import Herald, Recorded, Sink

# Deliveries of one action in flight at once per worker (the action's ``concurrency``), set
# explicitly by the crash tests so that their bounds do not move with the default (8). A worker
# killed by SIGKILL can leave at most this many messages delivered at the sink whose "delivered
# key" record (``herald.delivered.<action>``, written right after each delivery) is not in Kafka
# yet; the worker that reads those messages again cannot suppress them, so they are the only
# duplicates one kill may cause. Every message delivered earlier is suppressed.
CONCURRENCY = 8


def delivered_numbers(sink: Sink, path: str, first: int = 0) -> list[int]:
    """``n`` of every request on ``path`` (events are ``{"n": ...}`` sent as raw JSON), in arrival order;
    the requests before index ``first`` are left out (e.g. the ones a ``Sink.switch`` says were refused)."""
    return [json.loads(r.body)["n"] for r in list(sink.requests.get(path, []))[first:]]


def wait_all_delivered(sink: Sink, path: str, acknowledged: Iterable[int], timeout: float,
                       quiet: float = 2.0, first: int = 0) -> list[int]:
    """Wait until every acknowledged number reached ``path`` (naming the missing ones on timeout),
    then until the sink has had no new request on ``path`` for ``quiet`` seconds, so that late
    redeliveries are counted too. Returns every delivered number, in arrival order. ``first``: as
    in ``delivered_numbers``."""
    want = set(acknowledged)
    deadline = time.time() + timeout
    while missing := sorted(want - set(delivered_numbers(sink, path, first))):
        if time.time() > deadline:
            raise AssertionError(f"after {timeout:.0f}s, {len(missing)} of {len(want)} acknowledged events never "
                                 f"reached {path}: {missing[:100]}")
        time.sleep(0.2)
    last, since = sink.count(path), time.time()
    while time.time() - since < quiet:
        time.sleep(0.1)
        if sink.count(path) != last:
            last, since = sink.count(path), time.time()
    return delivered_numbers(sink, path, first)


def assert_counts(got: list[int], acknowledged: Iterable[int], max_duplicates: int, why: str,
                  posted: Iterable[int] | None = None, context: str = "") -> int:
    """Exact accounting of the deliveries ``got``: every acknowledged number delivered (lost = 0),
    nothing that was never ``posted`` (default: the acknowledged ones), and at most
    ``max_duplicates`` deliveries beyond the first of each number. Returns the duplicate count."""
    acked = set(acknowledged)
    allowed = set(posted) if posted is not None else acked
    counts = Counter(got)
    lost = sorted(acked - counts.keys())
    unknown = sorted(counts.keys() - allowed)
    duplicates = len(got) - len(counts)
    repeated = sorted(n for n, c in counts.items() if c > 1)
    assert not lost and not unknown and duplicates <= max_duplicates, (
        f"{len(acked)} acknowledged, {len(got)} deliveries of {len(counts)} distinct events: "
        f"lost {len(lost)} {lost[:100]}; never posted {unknown[:100]}; "
        f"{duplicates} duplicate(s) {repeated[:100]}, bound {max_duplicates} ({why}){context}")
    return duplicates


def wait_records(herald: Herald, suffix: str, ready: Callable[[list[dict[str, Any]]], Any], what: str,
                 timeout: float = 30.0) -> Any:
    """Read ``<prefix><suffix>`` until ``ready(records)`` is truthy and return that value."""
    deadline = time.time() + timeout
    while True:
        records = herald.read_topic(suffix)
        value = ready(records)
        if value:
            return value
        if time.time() > deadline:
            raise AssertionError(f"{herald.prefix}{suffix}: timed out after {timeout:.0f}s waiting for {what} "
                                 f"({len(records)} record(s) on the topic)")
        time.sleep(0.3)


def partitions_of(herald: Herald) -> int:
    return int(yaml.safe_load(herald.cfg_path.read_text())["herald"]["partitions"])


def wait_processed(herald: Herald, suffixes: Iterable[str], timeout: float = 30.0) -> None:
    """Wait until the worker group's committed offsets pass every record now on each topic.

    Herald commits an offset only after what processing that record produced (action messages,
    state changelog, delivered keys) was flushed to Kafka, so afterwards a crash replays none of
    these records: a crash test that is about restored state, not about replays, crashes then."""
    parts = partitions_of(herald)
    for suffix in suffixes:
        end = [0] * parts
        for partition, offset, _ in herald.read_positions(suffix):
            end[partition] = max(end[partition], offset + 1)

        def done(suffix: str = suffix, end: list[int] = end) -> bool:
            committed = herald.committed(suffix, parts)
            return all(c >= e for c, e in zip(committed, end) if e)

        deadline = time.time() + timeout
        while not done():
            if time.time() > deadline:
                raise AssertionError(f"{herald.prefix}{suffix}: committed offsets {herald.committed(suffix, parts)} "
                                     f"did not reach {end} within {timeout:.0f}s")
            time.sleep(0.3)


def event_of(request: Recorded) -> str:
    """The event id of a webhook delivery (its Idempotency-Key is ``event:route:action``)."""
    headers = {k.lower(): v for k, v in request.headers.items()}
    return headers["idempotency-key"].split(":")[0]
