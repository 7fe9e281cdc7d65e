"""The timeline's memory bound: read N events (default 200,000) for a timeline, in a fresh process,
and report events/s and peak RSS; the same for N/4 shows that memory does not grow with N.

    python bench/timeline_memory.py [--events 200000] [--bootstrap HOST:PORT] [--bound-mib 256]

Without --bootstrap it starts its own broker (temporary directory, free ports). The events are
Tracee findings and Falco events over 50 hosts with event times shuffled across a day, so the
external sort really has to reorder them. Exit status 1 when the peak RSS passes the bound.

Where the bound comes from (app/forensics/timeline.py, measured here on 200,000 events of ~1.2 KiB):
interpreter and imports (~45 MiB) + librdkafka's prefetch (``PREFETCH_KIB`` queued, 8 MiB fetches:
~60 MiB RSS) + one sort run (``--run-mib``, 32 MiB of rows, ~1.5x that with Python's objects) + one
row and a 256 KiB read buffer per spilled run + SQLite's 4 MiB page cache for the join: ~170 MiB
at 32 MiB runs. None of it depends on the number of events; the N/4 figure shows it.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import orjson  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

_MEASURE = """
import json, resource, sys
from app.forensics.timeline import bench_read
rate = bench_read(sys.argv[1], sys.argv[2], int(sys.argv[3]), run_mib=int(sys.argv[4]))
print(json.dumps({"events_per_s": rate, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def event_bodies(n: int, seed: int = 11) -> Any:
    import os

    fixtures = Path(os.environ.get("HERALD_FIXTURES", str(FIXTURES)))
    tracee = orjson.loads((fixtures / "tracee" / "finding-single.json").read_bytes())
    falco = orjson.loads((fixtures / "falco" / "event-single.json").read_bytes())
    rng = random.Random(seed)
    day_ns = 86400 * 10**9
    base = 1_763_900_000 * 10**9
    for i in range(n):
        host = f"node-{rng.randrange(50):02d}"
        t = base + rng.randrange(day_ns)
        if i % 3:
            tracee["Context"]["hostName"] = host
            tracee["Context"]["timestamp"] = t
            yield orjson.dumps(tracee)
        else:
            falco["hostname"] = host
            secs, frac = divmod(t, 10**9)
            falco["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"
            yield orjson.dumps(falco)


def produce(bootstrap: str, prefix: str, n: int) -> float:
    from confluent_kafka import Producer

    from app.kafka.admin import ensure_topics

    topic = f"{prefix}events"
    ensure_topics(bootstrap, [topic], 6, 1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "compression.type": "lz4",
                         "queue.buffering.max.messages": 200_000})
    started = time.perf_counter()
    for i, body in enumerate(event_bodies(n)):
        while True:
            try:
                producer.produce(topic, value=body, headers=[("herald-event-id", f"b{i:08d}".encode())])
                break
            except BufferError:
                producer.poll(0.1)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(120)
    return time.perf_counter() - started


def measure(bootstrap: str, prefix: str, n: int, run_mib: int) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", _MEASURE, bootstrap, prefix, str(n), str(run_mib)],
                          cwd=ROOT, capture_output=True, text=True, check=False, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(f"timeline read failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def bench_timeline_memory(bootstrap: str, n: int = 200_000, run_mib: int = 32) -> dict[str, Any]:
    prefix = f"tlmem{uuid.uuid4().hex[:6]}."
    produce_s = produce(bootstrap, prefix, n)
    quarter = measure(bootstrap, prefix, n // 4, run_mib)
    full = measure(bootstrap, prefix, n, run_mib)
    return {
        "events": n, "produce_s": round(produce_s, 1), "run_mib": run_mib,
        "events_per_s": round(full["events_per_s"], 1), "peak_rss_mib": round(full["peak_rss_mib"], 1),
        "quarter_events": n // 4, "quarter_peak_rss_mib": round(quarter["peak_rss_mib"], 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--bootstrap", help="an existing broker; default: start a temporary one")
    ap.add_argument("--bound-mib", type=float, default=256.0)
    ap.add_argument("--run-mib", type=int, default=32)
    args = ap.parse_args()
    broker = None
    state = None
    bootstrap = args.bootstrap
    if not bootstrap:
        from bench.stack import start_broker

        state = Path(tempfile.mkdtemp(prefix="herald-bench-tl-"))
        broker = start_broker(state)
        bootstrap = broker.bootstrap
    try:
        result = bench_timeline_memory(bootstrap, args.events, args.run_mib)
    finally:
        if broker is not None:
            broker.stop()
        if state is not None:
            import shutil

            shutil.rmtree(state, ignore_errors=True)
    result["bound_mib"] = args.bound_mib
    result["within_bound"] = result["peak_rss_mib"] <= args.bound_mib
    print(json.dumps(result, indent=1))
    return 0 if result["within_bound"] else 1


if __name__ == "__main__":
    sys.exit(main())
