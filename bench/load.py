"""Load for the benchmarks: event bodies, HTTP posting (closed loop and fixed rate), direct produce,
and RSS/CPU sampling of the processes under test.

Every event carries ``"bench": {"run": <id>, "seq": <n>, "sent_us": <µs since the epoch>}`` as
its first key; ``sent_us`` is taken just before the request (or the produce) is made, and the
sink finds it in the rendered body, which gives a client-send-to-receipt latency per event.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiohttp
import orjson
import psutil  # type: ignore[import-untyped]

FIXTURES = Path(os.environ.get("HERALD_FIXTURES", str(Path(__file__).resolve().parent.parent / "tests" / "fixtures")))
AQUA = FIXTURES / "postee" / "aqua-input.json"
TRACEE = FIXTURES / "tracee" / "finding-single.json"


class Events:
    """The event mix: every ``tracee_every``-th event is the Tracee finding, the rest the Aqua scan."""

    def __init__(self, run: str, tracee_every: int = 4) -> None:
        self.run = run.encode()
        self.tracee_every = tracee_every
        self.aqua = orjson.dumps(orjson.loads(AQUA.read_bytes()))
        self.tracee = orjson.dumps(orjson.loads(TRACEE.read_bytes()))

    def body(self, seq: int) -> bytes:
        base = self.tracee if self.tracee_every and seq % self.tracee_every == self.tracee_every - 1 else self.aqua
        head = b'{"bench":{"run":"%s","seq":%d,"sent_us":%d},' % (self.run, seq, time.time_ns() // 1000)
        return head + base[1:]

    def mean_bytes(self) -> float:
        if not self.tracee_every:
            return float(len(self.aqua))
        k = self.tracee_every
        return ((k - 1) * len(self.aqua) + len(self.tracee)) / k


@dataclass
class PostStats:
    sent: int = 0
    accepted: int = 0
    retried: int = 0  # 503 answers (Kafka not ready / not acknowledged) that were posted again
    failed: int = 0
    first_post: float = 0.0
    last_ack: float = 0.0
    errors: list[str] = field(default_factory=list)


async def _post_one(session: aiohttp.ClientSession, url: str, events: Events, seq: int, stats: PostStats) -> None:
    for _ in range(20):
        body = events.body(seq)
        stats.sent += 1
        try:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                if resp.status == 200:
                    stats.accepted += 1
                    stats.last_ack = time.time()
                    return
                if resp.status != 503:
                    stats.failed += 1
                    if len(stats.errors) < 5:
                        stats.errors.append(f"HTTP {resp.status}")
                    return
        except (TimeoutError, aiohttp.ClientError) as exc:
            if len(stats.errors) < 5:
                stats.errors.append(f"{type(exc).__name__}: {exc}")
        stats.retried += 1
        await asyncio.sleep(0.2)
    stats.failed += 1


def _session(limit: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit),
                                 timeout=aiohttp.ClientTimeout(total=30))


async def post_closed_loop(url: str, events: Events, n: int, concurrency: int, start_seq: int = 0) -> PostStats:
    """``n`` events with ``concurrency`` requests in flight (each sender waits for its answer)."""
    stats = PostStats(first_post=time.time())
    counter = iter(range(start_seq, start_seq + n))

    async def sender(session: aiohttp.ClientSession) -> None:
        for seq in counter:
            await _post_one(session, url, events, seq, stats)

    async with _session(concurrency) as session:
        await asyncio.gather(*(sender(session) for _ in range(concurrency)))
    return stats


async def post_fixed_rate(url: str, events: Events, rate: float, seconds: float, start_seq: int = 0,
                          max_in_flight: int = 512) -> PostStats:
    """Open loop: event ``i`` is sent at ``start + i / rate`` whatever the answers' delay."""
    total = int(rate * seconds)
    stats = PostStats(first_post=time.time())
    tasks: set[asyncio.Task[None]] = set()
    async with _session(max_in_flight) as session:
        start = time.perf_counter()
        i = 0
        while i < total:
            due = min(total, int((time.perf_counter() - start) * rate) + 1)
            while i < due:
                task = asyncio.create_task(_post_one(session, url, events, start_seq + i, stats))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        await asyncio.gather(*list(tasks))
    return stats


def produce_direct(bootstrap: str, topic: str, events: Events, n: int, start_seq: int = 0) -> PostStats:
    """``n`` events produced straight to the events topic, as a scanner publishing to Kafka would
    (no Herald headers: the worker falls back to topic-partition-offset ids and Kafka time)."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", "queue.buffering.max.kbytes": 256 * 1024})
    stats = PostStats(first_post=time.time())
    failures: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            stats.accepted += 1

    for i in range(n):
        while True:
            try:
                producer.produce(topic, value=events.body(start_seq + i), on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        stats.sent += 1
        if i % 500 == 0:
            producer.poll(0)
    producer.flush(60)
    stats.last_ack = time.time()
    stats.failed = len(failures)
    stats.errors = failures[:5]
    return stats


class ProcessSampler:
    """Samples RSS of named processes every ``interval`` seconds in a thread: peak and a series."""

    def __init__(self, pids: dict[str, int], interval: float = 0.5) -> None:
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.interval = interval
        self.peak: dict[str, float] = {name: 0.0 for name in pids}
        self.series: dict[str, list[tuple[float, float]]] = {name: [] for name in pids}
        self._cpu0 = {name: self._cpu(p) for name, p in self.procs.items()}
        self.cpu_s: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        try:
            t = proc.cpu_times()
            return float(t.user + t.system)
        except psutil.Error:
            return 0.0

    def sample(self) -> None:
        now = time.time()
        for name, proc in self.procs.items():
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            self.peak[name] = max(self.peak[name], rss)
            self.series[name].append((now, rss))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Self:
        self.started = time.time()
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()
        self.elapsed = time.time() - self.started
        self.cpu_s = {name: round(self._cpu(p) - self._cpu0[name], 1) for name, p in self.procs.items()}
