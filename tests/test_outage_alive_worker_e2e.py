"""A worker that lives through a broker outage delivers everything once after the broker returns.

Real broker SIGKILLed and restarted, real bridge and worker processes, a loopback sink.

The worker pauses an action partition with more than ``agents.kafkaio.PAUSE_ABOVE`` messages in
flight. librdkafka keeps that pause when the group loses the partition (the outage outlasts
``session.timeout.ms``: on_lost) and assigns it again after the broker is back, while the worker
forgot it had paused it: the partition was never fetched again and its events were never
delivered, without an error (seen once under 100 events/s with a 60 s outage: action partitions 1
and 2 delivered nothing for 4 minutes). Here the sink refuses every delivery (503, retried) until
the broker is down, so that every action partition has its in-flight window full and is paused
when the partition is lost.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from agents.kafkaio import PAUSE_ABOVE
from app.devtools.kafka_local import LocalKafka
from tests.accounting import assert_counts, delivered_numbers, wait_all_delivered, wait_records
from tests.harness import Herald, private_broker, Sink, wait_until
from tests.test_resilience_e2e import config

PARTITIONS = 3
# enough for more than PAUSE_ABOVE per action partition (~333 each; murmur2 of random event ids)
BEFORE = 1000
DURING = 100  # posted while the broker is down: spooled by the bridge (202)
AFTER = 100
OUTAGE_S = 25  # from the kill to the restart (the restart itself takes some more seconds)
BOUND_S = 120  # every acknowledged event at the sink this long after the broker is back


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker of this test's own, since the test kills and restarts it."""
    yield from private_broker("outage test's Kafka broker")



def test_worker_alive_through_outage_delivers_every_acknowledged_event_once(own_broker: LocalKafka,
                                                                           tmp_path: Path) -> None:
    assert BEFORE / PARTITIONS > PAUSE_ABOVE * 1.2
    cfg = {**config(sink := Sink()), "herald": {"partitions": PARTITIONS}}
    sink.script("/events", [], then=503)  # every delivery refused (and retried) until the switch below
    with sink, Herald(own_broker, cfg, tmp_path) as herald:
        acked: list[int] = []

        def post(n: int) -> None:
            status, body = herald.post({"n": n})
            assert status in (200, 202), (n, status, body)
            acked.append(n)

        for n in range(BEFORE):
            post(n)
        # every event routed, then a few retry rounds of the refused deliveries: by then the worker
        # has taken its window of each action partition and paused it
        wait_records(herald, "action.sink", lambda r: len(r) >= BEFORE, f"{BEFORE} action messages", 120)
        sink.wait_for("/events", sink.count("/events") + 24, 60)

        own_broker.kill()
        killed = time.time()
        wait_until(lambda: "partitions lost" in herald.log_text("worker"), 60,
                   "the worker to lose its partitions (session timeout)")
        for n in range(BEFORE, BEFORE + DURING):
            post(n)
        refused = sink.switch("/events", 200)  # deliveries succeed again while the broker is still down
        time.sleep(max(0.0, killed + OUTAGE_S - time.time()))  # the outage lasts OUTAGE_S
        own_broker.start(timeout=120)
        back = time.time()
        for n in range(BEFORE + DURING, BEFORE + DURING + AFTER):
            post(n)

        got = wait_all_delivered(sink, "/events", acked, BOUND_S, first=refused)
        took = time.time() - back
        lost_log = herald.log_text("worker").count("partitions lost")
        per_partition = Counter(p for p, _, _ in herald.read_positions("action.sink"))
        print(f"\nworker alive through a {back - killed:.0f}s outage: {len(acked)} acknowledged, {refused} refused "
              f"attempts before it, partitions lost {lost_log}x; all delivered {took:.0f}s after the broker was "
              f"back; action messages per partition {dict(sorted(per_partition.items()))}")
        assert_counts(got, acked, 0, "the worker was never restarted: deliveries that succeeded while the broker "
                      "was down are suppressed when their messages are read again", posted=acked)
        assert len(delivered_numbers(sink, "/events", refused)) == len(acked)
