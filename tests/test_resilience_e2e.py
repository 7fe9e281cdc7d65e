"""No acknowledged event is lost: across worker restarts and a broker outage (real processes, real broker)."""

from __future__ import annotations

import json
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from app.kafka_local import LocalKafka
from tests.harness import Herald, Sink, free_port, wait_until


def config(sink: Sink) -> dict[str, Any]:
    return {
        "routes": [{"name": "all", "actions": ["sink"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "sink", "type": "webhook", "enable": True, "url": sink.url + "/events",
                     "retry-initial-backoff": "0.1s", "retry-max-backoff": "1s", "retry-deadline": "5m",
                     "retry-max-attempts": 100}],
    }


def delivered_ids(sink: Sink) -> list[int]:
    return [json.loads(r.body)["n"] for r in sink.requests.get("/events", [])]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_worker_restart_midway_loses_nothing(kafka: Any, tmp_path: Path, sig: int) -> None:
    n = 300
    with Sink() as sink, Herald(kafka, config(sink), tmp_path) as herald:
        accepted = []
        for i in range(n):
            if i == n // 2:
                herald.stop("worker", sig)
                herald.start_worker("worker", wait=False)
            status, body = herald.post({"n": i})
            assert status == 200, body
            accepted.append(i)
        wait_until(lambda: set(delivered_ids(sink)) >= set(accepted), 120,
                   f"all {n} events delivered (have {len(set(delivered_ids(sink)))})")
        got = delivered_ids(sink)
        assert set(got) == set(range(n))
        duplicates = len(got) - len(set(got))
        print(f"\n{sig!s}: {n} events, {duplicates} redelivered after the restart")


@pytest.fixture
def own_broker() -> Iterator[LocalKafka]:
    """A broker of this test's own, since the test stops and restarts it."""
    state = Path(tempfile.mkdtemp(prefix="herald-outage-kafka-"))
    broker = LocalKafka(state, port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()


def test_broker_outage_gives_503_and_loses_no_acknowledged_event(own_broker: LocalKafka, tmp_path: Path) -> None:
    with Sink() as sink, Herald(own_broker, config(sink), tmp_path) as herald:
        for i in range(20):
            assert herald.post({"n": i})[0] == 200
        own_broker.kill()
        wait_until(lambda: herald.get("/readyz")[0] == 503, 30, "/readyz to report Kafka down")
        status, body = herald.post({"n": 999})
        assert status == 503 and "retry" in body["error"].lower()
        own_broker.start(timeout=120)
        wait_until(lambda: herald.get("/readyz")[0] == 200, 60, "/readyz to recover")
        acknowledged = list(range(20))
        for i in range(20, 40):
            status, _ = herald.post({"n": i})
            assert status == 200
            acknowledged.append(i)
        wait_until(lambda: set(delivered_ids(sink)) >= set(acknowledged), 120,
                   f"every acknowledged event delivered (have {sorted(set(delivered_ids(sink)))})")
        assert 999 not in delivered_ids(sink)
