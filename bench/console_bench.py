"""Console page load times with 100,000 events on the topics (issue 17: pages under 300 ms).

Starts a private Kafka broker on 127.0.0.1, produces N events (Falco-shaped) to ``<prefix>events``
with a decision and a delivery record per event plus 1,000 dead letters, starts ``herald console``
on it, waits until the console has read every event (its catch-up time is reported), then fetches
each page 20 times over HTTP (full body; a logged-in session cookie) and reports the median and
p95 in milliseconds. Prints a JSON object; ``--out`` also writes it.

    python bench/console_bench.py [--events 100000] [--out bench/console.json]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson
import yaml
from confluent_kafka import Producer

from app.devtools.kafka_local import LocalKafka
from tests.harness import ROOT, free_port, wait_until

TOKEN = "bench-operator-token"


def produce(bootstrap: str, prefix: str, n: int, dead: int) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 200000})
    now = time.time()

    def send(topic: str, key: str, value: bytes, headers: list[tuple[str, bytes]] | None = None) -> None:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=value, headers=headers or [])
                return
            except BufferError:  # the local queue is full: let the broker catch up
                producer.poll(0.5)

    for i in range(n):
        eid = f"ev-{i:07d}"
        event = {"rule": "Terminal shell in container", "priority": ("Warning", "Critical", "Error")[i % 3],
                 "output": f"shell {i}", "hostname": f"node-{i % 50}", "source": "syscall",
                 "time": "2026-11-30T08:00:00.000000000Z",
                 "output_fields": {"container.image.repository": "nginx", "container.image.tag": str(i % 200)}}
        headers = [("herald-event-id", eid.encode()), ("herald-received-at", str(int(now * 1000)).encode())]
        send(prefix + "events", eid, orjson.dumps(event), headers)
        decision = {"event_id": eid, "time": now, "config_hash": "bench",
                    "routes": {"r1": {"matched": True, "reason": "input matched", "template": "raw"},
                               "r2": {"matched": False, "reason": "input did not match", "template": "raw"}},
                    "actions": [{"route": "r1", "action": "a1"}], "guarded": [], "failures": []}
        send(prefix + "decisions", eid, orjson.dumps(decision))
        delivered = i >= dead
        delivery = {"event_id": eid, "route": "r1", "action": "a1", "attempt": 1,
                    "outcome": "delivered" if delivered else "failed", "status": None if delivered else 400,
                    "error": "" if delivered else "HTTP 400", "latency_ms": 3.2, "time": now, "redrive": 0}
        send(prefix + "deliveries", eid, orjson.dumps(delivery))
        if not delivered:
            letter = {"stage": "a1", "error": "HTTP 400", "error_type": "PermanentActionError", "attempts": 1,
                      "status": 400, "first_attempt_at": now, "last_attempt_at": now, "event_id": eid,
                      "source_topic": prefix + "action.a1", "source_partition": 0, "source_offset": i,
                      "original": {"event_id": eid, "route": "r1", "action": "a1", "content": {"title": "t"}}}
            send(prefix + "dlq.a1", eid, orjson.dumps(letter))
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(120) == 0, "the broker did not take every record"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--dead", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", help="write the JSON result here too")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="herald-console-bench-"))
    broker = LocalKafka(state / "kafka", port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    console: subprocess.Popen[bytes] | None = None
    try:
        prefix = "cb."
        port = free_port()
        cfg = {"routes": [{"name": "r1", "input": 'input.source == "syscall"', "actions": ["a1"], "template": "raw"},
                          {"name": "r2", "input": 'input.source == "k8s"', "actions": ["a1"], "template": "raw"}],
               "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
               "actions": [{"name": "a1", "type": "webhook", "enable": True, "url": "http://127.0.0.1:9/hook"}],
               "herald": {"kafka-bootstrap-servers": broker.bootstrap, "topic-prefix": prefix, "partitions": 3,
                          "console": {"listen": f"127.0.0.1:{port}",
                                      "users": [{"name": "bench", "role": "operator", "tokens": [TOKEN]}]}}}
        cfg_path = state / "cfg.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        # the topics first (the worker would create them): 3 partitions each
        from app.kafka.admin import ensure_topics  # noqa: PLC0415

        ensure_topics(broker.bootstrap, [prefix + t for t in ("events", "decisions", "deliveries", "action.a1",
                                                               "dlq.a1", "dlq.router")], 3, 1)
        started = time.perf_counter()
        produce(broker.bootstrap, prefix, args.events, args.dead)
        produce_s = time.perf_counter() - started
        log = open(state / "console.log", "wb")  # noqa: SIM115 - closed below
        t0 = time.perf_counter()
        console = subprocess.Popen([sys.executable, "-m", "app.cli", "console", "--config", str(cfg_path)], cwd=ROOT,
                                   stdout=log, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))

        def get(path: str) -> bytes:
            with opener.open(base + path, timeout=60) as resp:
                return bytes(resp.read())

        def read_all() -> bool:
            if console is not None and console.poll() is not None:
                raise RuntimeError((state / "console.log").read_text()[-3000:])
            try:
                req = urllib.request.Request(base + "/api/stats", headers={"Authorization": f"Bearer {TOKEN}"})
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return bool(json.loads(resp.read())["caught_up"])
            except OSError:
                return False

        wait_until(read_all, 900, "the console to catch up", interval=0.5)
        catch_up_s = time.perf_counter() - t0
        req = urllib.request.Request(base + "/api/stats", headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            stats = json.loads(resp.read())
        assert sum(stats["intake"]) == args.events, f"the stats count {sum(stats['intake'])} events"
        login = get("/login").decode()
        nonce = re.search(r'name="csrf" value="([^"]+)"', login)
        assert nonce
        opener.open(urllib.request.Request(base + "/login", data=urllib.parse.urlencode(
            {"csrf": nonce.group(1), "token": TOKEN}).encode()), timeout=30).read()
        newest = json.loads(get("/api/events?limit=1"))[0]["event_id"]
        pages = {"live": "/", "live filtered": "/?route=r1&outcome=delivered&window=3600",
                 "story": f"/events/{newest}", "dead letters": "/dlq", "stats": "/stats",
                 "config": "/config", "try a route": "/try", "events API (200)": "/api/events"}
        results: dict[str, Any] = {}
        for name, path in pages.items():
            times = []
            size = 0
            for _ in range(args.repeat):
                t = time.perf_counter()
                size = len(get(path))
                times.append((time.perf_counter() - t) * 1000)
            results[name] = {"median_ms": round(statistics.median(times), 1), "p95_ms": round(pct(times, 95), 1),
                             "bytes": size}
        out = {"events": args.events, "dead_letters": args.dead, "kept_in_memory": 5000,
               "produce_s": round(produce_s, 1), "console_catch_up_s": round(catch_up_s, 1),
               "console_records_read_at_catch_up": stats["records_read"], "pages": results,
               "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        text = json.dumps(out, indent=2)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n")
    finally:
        if console is not None:
            console.terminate()
            console.wait(30)
        broker.stop()
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
