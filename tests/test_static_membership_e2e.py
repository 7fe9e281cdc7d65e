"""Static group membership: a worker restarted within the session timeout gets its partitions back
without a rebalance, and the other worker is not disturbed (real processes, real broker)."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path
from typing import Any

from tests.harness import Herald, Sink, wait_until

READY = re.compile(r"herald worker ready: \d+ partitions assigned: (.*)$")


def config(sink: Sink) -> dict[str, Any]:
    return {
        "herald": {"partitions": 4},
        "routes": [{"name": "all", "actions": ["sink"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": "sink", "type": "webhook", "enable": True, "url": sink.url + "/events",
                     "retry-initial-backoff": "0.1s", "retry-max-backoff": "1s"}],
    }


def assignments(herald: Herald, name: str) -> list[set[str]]:
    return [set(m.group(1).split()) for line in herald.log_text(name).splitlines() if (m := READY.search(line))]


def test_a_worker_restarted_within_the_session_timeout_keeps_its_partitions(kafka: Any, tmp_path: Path) -> None:
    with Sink() as sink:
        sink.expect("/events", method="POST", json=True)
        with Herald(kafka, config(sink), tmp_path, workers=0) as herald:
            herald.env["HERALD_GROUP_INSTANCE_ID"] = "worker-a"
            herald.start_worker("worker")
            herald.env["HERALD_GROUP_INSTANCE_ID"] = "worker-b"
            herald.start_worker("worker1")
            # wait until the two share the partitions (each holds some, together all of them)
            total = 3 * 4  # events, route.state and the action topic, 4 partitions each
            wait_until(lambda: assignments(herald, "worker") and assignments(herald, "worker1") and len(
                assignments(herald, "worker")[-1] | assignments(herald, "worker1")[-1]) == total
                and not assignments(herald, "worker")[-1] & assignments(herald, "worker1")[-1],
                60, "both workers to hold their share of the partitions")
            time.sleep(2)  # settled: no rebalance in flight
            mine_before = assignments(herald, "worker")[-1]
            other_lines = herald.log_text("worker1").count("\n")

            herald.stop("worker", signal.SIGKILL)
            herald.env["HERALD_GROUP_INSTANCE_ID"] = "worker-a"
            herald.start_worker("worker")  # well within the 10 s session timeout
            assert assignments(herald, "worker")[-1] == mine_before

            for n in range(20):
                status, body = herald.post({"n": n})
                assert status == 200, body
            sink.wait_for("/events", 20)
            got = sorted(json.loads(r.body)["n"] for r in sink.requests["/events"])
            assert got == list(range(20))
            # the other worker saw no rebalance: no partition revoked or assigned since the restart
            later = herald.log_text("worker1").splitlines()[other_lines:]
            assert not [ln for ln in later if "revoked" in ln or "ready" in ln], later
