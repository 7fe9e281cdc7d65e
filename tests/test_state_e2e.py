"""Issue 6 on a real broker: dedup and aggregation in changelog-backed tables, crashes, scale-out, redrive."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.accounting import (CONCURRENCY, assert_counts,
                              wait_all_delivered)
from tests.harness import FIXTURES, ROOT, Herald, Sink, wait_until

AQUA = (FIXTURES / "postee" / "aqua-input.json").read_bytes()
FAST = {"retry-initial-backoff": "0.05s", "retry-max-backoff": "0.5s"}


def hook(name: str, sink: Sink, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "webhook", "enable": True, "url": f"{sink.url}/{name}", **FAST, **extra}


def one_hook_cfg(sink: Sink, name: str = "w1", partitions: int | None = None, **extra: Any) -> dict[str, Any]:
    """One route sending every event, as raw JSON, to one webhook action on ``sink``."""
    cfg: dict[str, Any] = {
        "routes": [{"name": "all", "actions": [name], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [hook(name, sink, **extra)],
    }
    if partitions is not None:
        cfg["herald"] = {"partitions": partitions}
    return cfg


def test_dedup_is_per_route_with_exact_ttl_and_survives_a_restart(kafka: Any, tmp_path: Path) -> None:
    props = ["digest", "image", "registry"]
    cfg = {
        "routes": [
            {"name": "d-ttl", "actions": ["a1", "a2"], "template": "raw-json",
             "plugins": {"unique-message-props": props, "unique-message-timeout": "6s"}},
            {"name": "d-other", "actions": ["a3"], "template": "raw-json",
             "plugins": {"unique-message-props": props, "unique-message-timeout": "6s"}},
            {"name": "d-forever", "input": 'input.kind == "forever"', "actions": ["a4"], "template": "raw-json",
             "plugins": {"unique-message-props": ["kind", "id"]}},
            {"name": "d-none", "input": 'input.kind == "no-props"', "actions": ["a5"], "template": "raw-json",
             "plugins": {"unique-message-props": ["absent.path"]}},
        ],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [hook(n, sink) for n in ("a1", "a2", "a3", "a4", "a5")] if (sink := Sink()) else [],
    }
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        first = time.time()
        assert herald.post(AQUA)[0] == 200
        assert herald.post(AQUA)[0] == 200
        for path in ("/a1", "/a2", "/a3"):
            sink.wait_for(path, 1)
        herald.read_topic("decisions", min_count=6)  # both events routed and deduplicated
        assert (sink.count("/a1"), sink.count("/a2"), sink.count("/a3")) == (1, 1, 1)
        duplicates = [d for d in herald.read_topic("decisions") if d.get("outcome") == "duplicate"]
        assert sorted(d["route"] for d in duplicates) == ["d-other", "d-ttl"]
        # after the TTL the same scan is delivered again
        wait_until(lambda: time.time() - first > 6.5, 10, "the TTL to pass")
        assert herald.post(AQUA)[0] == 200
        sink.wait_for("/a1", 2)
        sink.wait_for("/a3", 2)
        # an event without any of the props is delivered every time, not dropped
        herald.post({"kind": "no-props"})
        herald.post({"kind": "no-props"})
        sink.wait_for("/a5", 2)
        # a restart between two posts keeps the key (restored from the changelog)
        assert herald.post({"kind": "forever", "id": 7})[0] == 200
        sink.wait_for("/a4", 1)
        herald.stop("worker")
        herald.start_worker()
        assert herald.post({"kind": "forever", "id": 7})[0] == 200
        assert herald.post({"kind": "forever", "id": 8})[0] == 200
        sink.wait_for("/a4", 2)
        herald.read_topic("decisions", min_count=1)
        assert [json.loads(r.body)["id"] for r in sink.requests["/a4"]] == [7, 8]


AGG_TEMPLATE = """package herald.test.agg
title := sprintf("item %v", [input.n])
result := sprintf("event %v", [input.n])
aggregation_pkg := "herald.test.agg.aggregation"
"""
AGG_AGGREGATION = """package herald.test.agg.aggregation
title := sprintf("%d events", [count(input)])
result := concat("|", [d | d := input[_].description])
"""


def test_aggregation_batches_to_every_action_and_flushes_by_time_after_a_restart(kafka: Any, tmp_path: Path) -> None:
    tdir = tmp_path / "templates"
    tdir.mkdir()
    (tdir / "agg.rego").write_text(AGG_TEMPLATE)
    (tdir / "agg-aggregation.rego").write_text(AGG_AGGREGATION)
    sink = Sink()
    cfg = {
        "herald": {"template-dirs": [str(tdir)]},
        "routes": [{"name": "agg", "actions": ["b1", "b2"], "template": "agg",
                    "plugins": {"aggregate-message-number": 3, "aggregate-message-timeout": "12s"}}],
        "templates": [{"name": "agg", "rego-package": "herald.test.agg"}],
        "actions": [hook("b1", sink), hook("b2", sink)],
    }
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        for n in range(5):
            assert herald.post({"n": n, "application_scope_owners": [f"owner{n}"]})[0] == 200
        b1 = sink.wait_for("/b1", 1)
        sink.wait_for("/b2", 1)
        first = [int(x.split()[1]) for x in b1[0].body.decode().split("|")]
        assert len(first) == 3 and first == sorted(first)  # oldest first
        assert sink.requests["/b2"][0].body == b1[0].body
        herald.read_topic("decisions", min_count=10)  # events 3 and 4 are in the batch table
        herald.stop("worker")
        herald.start_worker()  # no new event: the timer flushes the batch restored from the changelog
        b1 = sink.wait_for("/b1", 2, timeout=60)
        sink.wait_for("/b2", 2)
        second = [int(x.split()[1]) for x in b1[1].body.decode().split("|")]
        assert second == sorted(set(range(5)) - set(first))
        assert sink.count("/b1") == 2 and sink.count("/b2") == 2


def delivered_numbers(sink: Sink, path: str) -> list[int]:
    return [json.loads(r.body)["n"] for r in sink.requests.get(path, [])]


def post_many(herald: Herald, numbers: range, threads: int = 8, ids: dict[int, str] | None = None) -> list[int]:
    """Post concurrently; returns the numbers the bridge acknowledged (``ids`` gets their event ids)."""
    acknowledged: list[int] = []
    lock = threading.Lock()
    chunks = [numbers[i::threads] for i in range(threads)]

    def run(chunk: range) -> None:
        for n in chunk:
            status, body = herald.post({"n": n})
            if status == 200:
                with lock:
                    acknowledged.append(n)
                    if ids is not None:
                        ids[n] = f'{body["event_id"]}@{body["partition"]}:{body["offset"]}'

    workers = [threading.Thread(target=run, args=(c,)) for c in chunks]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return acknowledged


def test_sigkill_twice_while_posting_5000_loses_nothing(kafka: Any, tmp_path: Path) -> None:
    sink = Sink()
    cfg = one_hook_cfg(sink, "c1", **{"retry-max-attempts": 50, "retry-deadline": "5m", "concurrency": CONCURRENCY})
    kills = 2
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        acked: list[int] = []
        for part in range(kills + 1):
            acked += post_many(herald, range(part * 1667, min(5000, (part + 1) * 1667)))
            if part < kills:
                herald.stop("worker", signal.SIGKILL)
                herald.start_worker(wait=False)
        assert len(acked) == 5000  # the bridge is not touched: it acknowledges every post
        got = wait_all_delivered(sink, "/c1", acked, 240)
        # each killed worker may leave up to CONCURRENCY deliveries done at the sink whose
        # delivered-key records were not written yet: the next worker delivers those again;
        # everything delivered before is suppressed by the delivered keys
        bound = kills * CONCURRENCY
        duplicates = assert_counts(got, acked, bound, f"{kills} kills x {CONCURRENCY} deliveries in flight")
        print(f"\nSIGKILL x{kills} during 5000 events: 0 lost, {duplicates} duplicates at the sink (bound {bound})")


def test_two_workers_split_partitions_and_survive_one_dying(kafka: Any, tmp_path: Path) -> None:
    sink = Sink()
    cfg = one_hook_cfg(sink, partitions=4, concurrency=CONCURRENCY)
    with sink, Herald(kafka, cfg, tmp_path, workers=2) as herald:
        def assigned(name: str) -> int:
            lines = [ln for ln in herald.log_text(name).splitlines() if "herald worker ready" in ln]
            return int(lines[-1].split("ready: ")[1].split()[0]) if lines else -1

        wait_until(lambda: assigned("worker") > 0 and assigned("worker1") > 0, 60, "both workers to own partitions")
        ids: dict[int, str] = {}
        acked = post_many(herald, range(300), ids=ids)
        herald.stop("worker1", signal.SIGKILL)
        acked += post_many(herald, range(300, 600), ids=ids)
        assert len(acked) == 600  # the bridge is not touched: it acknowledges every post
        try:
            got = wait_all_delivered(sink, "/w1", acked, 120)
        except AssertionError:
            raise AssertionError(explain_missing(herald, sink, ids, set(acked))) from None
        # the killed worker may leave up to CONCURRENCY deliveries done at the sink whose
        # delivered-key records were not written yet: the worker that takes its partitions over
        # delivers those again. The surviving worker keeps its delivered keys: no duplicates there.
        duplicates = assert_counts(got, acked, CONCURRENCY, "deliveries in flight in the one worker killed")
        print(f"\none of two workers killed: 600 events, 0 lost, {duplicates} duplicates (bound {CONCURRENCY})")


def test_a_slow_delivery_is_not_committed_past_and_survives_sigkill(kafka: Any, tmp_path: Path) -> None:
    """Deliveries run concurrently; later ones finish first. The commit must stop at the slow one.

    faust's own rule committed past an unfinished message at the head of a partition, so a worker
    killed during a slow delivery lost that event (seen as routed events never attempted)."""
    sink = Sink()
    cfg = one_hook_cfg(sink, partitions=1, concurrency=4)
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        sink.hold_next("/w1")
        assert herald.post({"n": 0})[0] == 200
        sink.wait_for("/w1", 1, timeout=30)  # n=0 is being delivered and gets no answer
        for n in range(1, 6):
            assert herald.post({"n": n})[0] == 200
        wait_until(lambda: set(delivered_numbers(sink, "/w1")) == set(range(6)), 30, "n=1..5 delivered")
        time.sleep(3)  # several commit intervals (1 s) pass while n=0 is still in flight
        assert herald.committed("action.w1", 1)[0] in (-1, 0)
        assert herald.committed("events", 1)[0] == 6  # the router finished all six
        herald.stop("worker", signal.SIGKILL)
        sink.release("/w1")
        herald.start_worker()
        wait_until(lambda: delivered_numbers(sink, "/w1").count(0) >= 2, 60, "n=0 delivered again")
        wait_until(lambda: herald.committed("action.w1", 1)[0] == 6, 30, "the commit to reach the end")
        # n=1..5 were delivered before the crash: the delivered-keys log suppresses them
        assert sorted(delivered_numbers(sink, "/w1")) == [0, 0, 1, 2, 3, 4, 5]


def test_a_transactional_producer_is_routed_once_and_its_markers_do_not_stall_the_commit(
        kafka: Any, tmp_path: Path) -> None:
    """Each Kafka transaction leaves a commit-marker offset no consumer ever sees: the worker
    must neither wait for it forever nor lose or duplicate the records around it."""
    from confluent_kafka import Producer

    sink = Sink()
    cfg = one_hook_cfg(sink, partitions=1)
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        producer = Producer({"bootstrap.servers": kafka.bootstrap, "transactional.id": f"tx-{herald.prefix}"})
        producer.init_transactions(30)
        for batch in range(3):
            producer.begin_transaction()
            for n in (2 * batch, 2 * batch + 1):
                producer.produce(herald.prefix + "events", value=json.dumps({"n": n}).encode())
            producer.commit_transaction(30)
            time.sleep(1)  # the worker reads each transaction before the next one is written
        # records at offsets 0 1 3 4 6 7, markers at 2 5 8: the commit ends after the last record
        wait_until(lambda: herald.committed("events", 1)[0] == 8, 60, "the events commit to reach offset 8")
        wait_until(lambda: herald.committed("action.w1", 1)[0] >= 6, 60, "the action commit to pass every message")
        deliveries = herald.read_topic("deliveries")
        assert sorted(delivered_numbers(sink, "/w1")) == list(range(6))
        assert sorted(d["outcome"] for d in deliveries).count("delivered") == 6


def explain_missing(herald: Herald, sink: Sink, ids: dict[int, str], acked: set[int]) -> str:
    """Where the undelivered events stopped: routed? attempted? dead-lettered? (for a flaky failure)."""
    missing = sorted(acked - set(delivered_numbers(sink, "/w1")))
    decided = {d["event_id"] for d in herald.read_topic("decisions", timeout=5)}
    attempts: dict[str, list[str]] = {}
    for d in herald.read_topic("deliveries", timeout=5):
        attempts.setdefault(d["event_id"], []).append(d["outcome"])
    dead = {d.get("event_id") for d in herald.read_topic("dlq.w1", timeout=5)}
    queued: dict[str, list[str]] = {}
    for partition, offset, value in herald.read_positions("action.w1", timeout=5):
        queued.setdefault(json.loads(value)["event_id"], []).append(f"{partition}:{offset}")
    rows = []
    for n in missing[:20]:
        event_id, _, where = ids[n].partition("@")
        rows.append(f"n={n} events partition:offset={where} routed={event_id in decided} "
                    f"action.w1 partition:offset={queued.get(event_id, [])} "
                    f"attempts={attempts.get(event_id, [])} dead={event_id in dead}")
    offsets = "\n".join(line for name in ("worker", "worker1") for line in herald.log_text(name).splitlines()
                        if "ready:" in line or "never processed" in line)
    return (f"{len(missing)} acknowledged events never reached the sink:\n" + "\n".join(rows)
            + f"\ncommitted events={herald.committed('events', 4)} action.w1={herald.committed('action.w1', 4)}"
            + "\n--- worker logs: assignments and offsets ---\n" + offsets)


def herald_cli(herald: Herald, *args: str) -> Any:
    res = subprocess.run([sys.executable, "-m", "app.cli", *args, "--config", str(herald.cfg_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def herald_cli_fails(herald: Herald, *args: str) -> str:
    res = subprocess.run([sys.executable, "-m", "app.cli", *args, "--config", str(herald.cfg_path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode != 0, res.stdout
    return res.stderr


DOWN_FOR_S = 120.0
POST_EVERY_S = 10.0


def test_a_sink_down_for_two_minutes_is_dead_lettered_then_redriven_exactly_once(kafka: Any, tmp_path: Path) -> None:
    sink = Sink()
    sink.script("/down", [], then=503)
    cfg = {
        "routes": [{"name": "both", "actions": ["down", "up"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        # the default retry policy: 5 attempts, backoff from 0.5 s
        "actions": [{"name": n, "type": "webhook", "enable": True, "url": f"{sink.url}/{n}"} for n in ("down", "up")],
    }
    with sink, Herald(kafka, cfg, tmp_path) as herald:
        started = time.time()
        n = 0
        while time.time() - started < DOWN_FOR_S - POST_EVERY_S:
            assert herald.post({"n": n})[0] == 200
            n += 1
            # the healthy action is not held back by the other one's retries
            sink.wait_for("/up", n, timeout=POST_EVERY_S)
            time.sleep(max(0.0, started + n * POST_EVERY_S - time.time()))
        # every message of the action that is down ends as a dead letter while it is still down
        dead = herald.read_topic("dlq.down", min_count=n, timeout=30)
        assert time.time() - started < DOWN_FOR_S + 30
        assert sorted(d["original"]["event"]["n"] for d in dead) == list(range(n))
        assert {(d["status"], d["attempts"]) for d in dead} == {(503, 5)}
        assert sink.count("/down") == 5 * n and sink.count("/up") == n
        time.sleep(max(0.0, started + DOWN_FOR_S - time.time()))

        listing = herald_cli(herald, "dlq", "list", "down")
        assert listing == {"down": {"total": n, "reasons": {"RetryableActionError HTTP 503": n}}}
        records = herald_cli(herald, "dlq", "list", "down", "--verbose")["records"]
        assert len(records) == n and all(r["status"] == 503 and r["attempts"] == 5 for r in records)
        shown = herald_cli(herald, "dlq", "show", records[0]["id"])
        assert shown["id"] == records[0]["id"] and shown["event_id"] == records[0]["event_id"]
        assert shown["original"]["action"] == "down" and shown["error_type"] == "RetryableActionError"
        assert "no dead letter down:0:999999" in herald_cli_fails(herald, "dlq", "show", "down:0:999999")
        assert "ACTION:PARTITION:OFFSET" in herald_cli_fails(herald, "dlq", "show", "down-0")
        assert "does not compile" in herald_cli_fails(herald, "dlq", "redrive", "down", "--filter", "input.[")

        sink.script("/down", [], then=200)  # the destination comes back
        before = sink.count("/down")
        out = herald_cli(herald, "dlq", "redrive", "down", "--filter", "input.original.event.n < 5")
        assert out == {"redriven": 5, "skipped": n - 5}
        out = herald_cli(herald, "dlq", "redrive", "down")
        assert out == {"redriven": n, "skipped": 0}

        def redriven() -> list[dict[str, Any]]:
            return [d for d in herald.read_topic("deliveries", timeout=5) if d["action"] == "down" and d["redrive"]]

        wait_until(lambda: len(redriven()) >= n + 5, 60, "both redrives to be processed")
        outcomes = sorted(d["outcome"] for d in redriven())
        assert outcomes == ["delivered"] * n + ["duplicate-suppressed"] * 5
        # each event exactly once, though five of them were redriven twice
        assert sorted(json.loads(r.body)["n"] for r in sink.requests["/down"][before:]) == list(range(n))

        assert "--yes" in herald_cli_fails(herald, "dlq", "purge", "down")
        assert herald_cli(herald, "dlq", "purge", "down", "--yes") == {"down": n}
        assert herald_cli(herald, "dlq", "list", "down") == {"down": {"total": 0, "reasons": {}}}
