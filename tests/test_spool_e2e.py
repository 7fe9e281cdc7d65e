"""The bridge's disk spool through a Kafka outage (issue 13): real broker SIGKILLed, real Herald processes.

- 60 s without a broker while a client that never retries posts 100 events/s: every event answered
  2xx (200 from Kafka, 202 from the spool) reaches the sink exactly once, none is refused;
- a small spool fills up: 503 with Retry-After, /readyz 503, and exactly the 2xx events delivered;
- a bridge SIGKILLed while its spool holds events starts again even while Kafka is down, and
  drains the spool once Kafka is back, in order;
- wrong Kafka credentials still stop a bridge at start (only an unreachable Kafka does not).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from app.devtools.kafka_local import LocalKafka
from app.routing.router import H_EVENT_ID
from tests.accounting import assert_counts, wait_all_delivered
from tests.harness import ROOT, free_port, Herald, private_broker, Sink, wait_until
from tests.test_resilience_e2e import config

RATE = 100  # events per second
LOAD_S = 90  # seconds of load in all
KILL_AT_S = 10  # the broker dies this long after the load started...
DOWN_S = 60  # ...and stays down this long


@pytest.fixture(scope="module")
def broker() -> Iterator[LocalKafka]:
    """A broker of this module's own: its tests kill and restart it."""
    yield from private_broker("spool tests' Kafka broker")



class OpenLoopClient:
    """Posts ``{"n": i}`` at ``rate`` per second for ``seconds``, on a schedule that does not wait
    for answers (a slow answer does not slow the sender), each event once, never retried."""

    def __init__(self, url: str, rate: int, seconds: float) -> None:
        self.url, self.rate, self.n = url, rate, int(rate * seconds)
        self.status: dict[int, int] = {}  # n -> HTTP status (0: connection error)
        self.answers: dict[int, Any] = {}
        self.started = 0.0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def start(self) -> OpenLoopClient:
        self.started = time.time()
        self.thread.start()
        return self

    async def _post(self, session: aiohttp.ClientSession, n: int) -> None:
        try:
            async with session.post(self.url, data=json.dumps({"n": n}).encode(),
                                    headers={"Content-Type": "application/json"}) as resp:
                self.answers[n] = await resp.json(content_type=None)
                self.status[n] = resp.status
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            self.answers[n] = f"{type(exc).__name__}: {exc}"
            self.status[n] = 0

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
            tasks = []
            for n in range(self.n):
                delay = self.started + n / self.rate - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self._post(session, n)))
            await asyncio.gather(*tasks)

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the client did not finish ({len(self.status)} of {self.n} answered)"

    def acked(self) -> list[int]:
        return sorted(n for n, s in self.status.items() if 200 <= s < 300)


def readyz(herald: Herald) -> tuple[int, dict[str, Any]]:
    status, body = herald.get("/readyz")
    return status, body if isinstance(body, dict) else {}


def event_ids_on_topic(herald: Herald) -> Counter[str]:
    from app.kafka.window import WindowReader

    reader = WindowReader(herald.kafka.client_config(), herald.prefix + "events", None, None)
    return Counter(r.headers.get(H_EVENT_ID) for r in reader)


def test_broker_down_60s_at_100_per_second_every_2xx_delivered_once(broker: LocalKafka, tmp_path: Path) -> None:
    """The worker starts once the broker is back (while the load still runs): this test is about
    the bridge; a worker that lives through the outage is tests/test_resilience_e2e.py's subject."""
    with Sink() as sink, Herald(broker, config(sink), tmp_path, workers=0) as herald:
        client = OpenLoopClient(herald.url + "/", RATE, LOAD_S).start()
        depth: list[dict[str, int]] = []
        time.sleep(max(0.0, client.started + KILL_AT_S - time.time()))
        broker.kill()
        killed = time.time()
        while time.time() < killed + DOWN_S:
            status, body = readyz(herald)
            assert status == 200 and body.get("kafka") in ("reachable", "unreachable"), body
            if "spool" in body:
                depth.append(body["spool"])
            time.sleep(1.0)
        broker.start(timeout=120)
        restarted = time.time()
        herald.start_worker()
        client.join(LOAD_S + 120)
        wait_until(lambda: readyz(herald)[1].get("spool", {}).get("records") == 0, 120, "the spool to drain")
        drained = time.time()

        codes = Counter(client.status.values())
        acked = client.acked()
        summary = (f"{client.n} posts at {RATE}/s, broker down {restarted - killed:.0f}s: answers {dict(codes)}; "
                   f"spool peak {max(d['records'] for d in depth)} events / {max(d['bytes'] for d in depth)} bytes; "
                   f"drained {drained - restarted:.0f}s after the broker restart")
        print(f"\n{summary}")
        # nothing refused: the spool took what Kafka could not (a client that never retries loses nothing)
        assert set(codes) <= {200, 202} and len(client.status) == client.n, (
            summary, {n: client.answers[n] for n, s in client.status.items() if s not in (200, 202)})
        assert codes[202] >= DOWN_S * RATE * 0.8, summary  # the outage was spooled, not waited out
        assert max(d["records"] for d in depth) >= DOWN_S * RATE * 0.5, summary

        got = wait_all_delivered(sink, "/events", acked, 240)
        assert_counts(got, acked, 0, "each 2xx event once: the spool keeps its event id and the worker is not "
                      "restarted", posted=range(client.n), context=f"; {summary}")
        on_topic = event_ids_on_topic(herald)
        twice = {e: c for e, c in on_topic.items() if c > 1}
        print(f"events topic: {sum(on_topic.values())} records, {len(twice)} event id(s) written twice "
              "(an in-flight produce whose acknowledgement the kill swallowed; the worker delivers once)")
        assert len(twice) <= 50, twice


def test_full_spool_answers_503_and_delivers_exactly_the_2xx_events(broker: LocalKafka, tmp_path: Path) -> None:
    cfg = {**config(sink := Sink()), "herald": {"spool": {"max-bytes": "16KiB"}}}
    with sink, Herald(broker, cfg, tmp_path) as herald:
        for n in range(5):
            assert herald.post({"n": n})[0] == 200
        broker.kill()
        wait_until(lambda: readyz(herald)[1].get("kafka") == "unreachable", 30, "/readyz to see Kafka down")
        statuses: dict[int, int] = {}
        retry_after = set()
        for n in range(5, 205):
            req_status, body = herald.post({"n": n})
            statuses[n] = req_status
            if req_status == 202:
                assert body["spooled"] is True and body["event_id"]
            elif req_status == 503:
                assert "spool is full" in body["error"], body
        codes = Counter(statuses.values())
        assert set(codes) == {202, 503} and 30 <= codes[202] < 150, codes
        # once full, every later event is refused (the spool keeps its order: no event jumps a refused one)
        first_503 = min(n for n, s in statuses.items() if s == 503)
        assert all(s == 503 for n, s in statuses.items() if n > first_503), codes
        status, body = readyz(herald)
        assert status == 503 and body["spool"]["records"] == codes[202] and body["kafka"] == "unreachable", body
        req = urllib.request.Request(herald.url + "/", data=b'{"n": 9999}', method="POST")
        try:
            urllib.request.urlopen(req, timeout=10)
            raise AssertionError("a post to a full spool was accepted")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            retry_after.add(exc.headers.get("Retry-After"))
        assert retry_after == {"5"}
        broker.start(timeout=120)
        acked = [*range(5), *(n for n, s in statuses.items() if s == 202)]
        got = wait_all_delivered(sink, "/events", acked, 180)
        assert_counts(got, acked, 0, "exactly the acknowledged events", posted=acked)
        def drained() -> bool:
            status, body = readyz(herald)
            return status == 200 and body["spool"]["records"] == 0

        wait_until(drained, 60, "the spool to drain and /readyz to be 200 again")
        print(f"\nsmall spool: {codes[202]} spooled (202), {codes[503]} refused (503), all 202 delivered once")


def start_bridge_without_kafka(herald: Herald) -> None:
    herald._spawn("bridge", "bridge")

    def spooling() -> bool:
        proc = herald.procs["bridge"]
        assert proc.poll() is None, f"the bridge exited with {proc.returncode}:\n{herald.log_text('bridge')[-3000:]}"
        status, body = readyz(herald)
        return status == 200 and body.get("kafka") == "unreachable"

    wait_until(spooling, 60, "the bridge to start without Kafka")


def test_bridge_sigkilled_with_a_full_spool_drains_it_at_start_in_order(broker: LocalKafka, tmp_path: Path) -> None:
    """Killed during the outage, restarted during it (takes events into the same spool), then
    restarted once more with Kafka up: everything drains, once each, in order."""
    with Sink() as sink, Herald(broker, config(sink), tmp_path, workers=0) as herald:
        assert herald.post({"n": 0})[0] == 200
        broker.kill()
        wait_until(lambda: readyz(herald)[1].get("kafka") == "unreachable", 30, "/readyz to see Kafka down")
        for n in range(1, 201):
            status, body = herald.post({"n": n})
            assert status == 202 and body["spooled"], (n, status, body)
        assert readyz(herald)[1]["spool"]["records"] == 200
        herald.stop("bridge", signal.SIGKILL)
        start_bridge_without_kafka(herald)  # Kafka still down: it starts anyway, on its spool
        assert readyz(herald)[1]["spool"]["records"] == 200
        for n in range(201, 301):
            status, body = herald.post({"n": n})
            assert status == 202 and body["spooled"], (n, status, body)
        herald.stop("bridge", signal.SIGKILL)
        broker.start(timeout=120)
        herald.start_bridge()  # its spool first, then what comes after
        for n in range(301, 311):
            status, _ = herald.post({"n": n})
            assert status in (200, 202), status
        wait_until(lambda: readyz(herald)[1]["spool"]["records"] == 0, 60, "the spool to drain")
        log = herald.log_text("bridge")
        assert "starting without Kafka (nothing is listening" in log, log[-2000:]
        assert "200 event(s)" in log and "300 event(s)" in log and "waiting for Kafka" in log, log[-2000:]
        herald.start_worker()
        got = wait_all_delivered(sink, "/events", range(311), 180)
        assert_counts(got, range(311), 0, "each event once", posted=range(311))
        # order: within each partition of the events topic, the numbers rise (spool before newer events)
        by_partition: dict[int, list[int]] = {}
        for partition, _, value in sorted(herald.read_positions("events")):
            by_partition.setdefault(partition, []).append(json.loads(value)["n"])
        for partition, ns in by_partition.items():
            assert ns == sorted(ns), (partition, ns)
        assert sum(map(len, by_partition.values())) == 311


def run_bridge_until_exit(tmp_path: Path, herald_cfg: dict[str, Any], timeout: float = 60) -> tuple[int | None, str]:
    """``herald bridge`` with ``herald_cfg``: (exit code, log) once it exits, or (None, log) when
    it is still serving after ``timeout`` seconds (then it is stopped)."""
    port = free_port()
    tmp_path.mkdir(parents=True, exist_ok=True)
    cfg = {"herald": {"http-listen": f"127.0.0.1:{port}", **herald_cfg}}
    cfg["herald"]["spool"] = {"dir": str(tmp_path / "spool"), **herald_cfg.get("spool", {})}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "bridge.log"
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "POSTEE_HTTP", "POSTEE_CFG")}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", "bridge", "--config", str(path)], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        return proc.poll(), log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text(errors="replace")[-2000:]


def test_a_bridge_with_a_spool_starts_without_kafka_but_not_with_wrong_credentials(secure_kafka: LocalKafka,
                                                                                   tmp_path: Path) -> None:
    nobody = f"127.0.0.1:{free_port()}"
    code, log = run_bridge_until_exit(tmp_path / "a", {"kafka-bootstrap-servers": nobody})
    assert code is None and "starting without Kafka (nothing is listening" in log, (code, log[-2000:])
    code, log = run_bridge_until_exit(tmp_path / "b", {"kafka-bootstrap-servers": nobody,
                                                        "spool": {"enabled": False}})
    assert code == 1 and "nothing is listening" in log and "Traceback" not in log, (code, log[-2000:])
    wrong = {**secure_kafka.client_settings(), "sasl-password": "not-the-password"}
    code, log = run_bridge_until_exit(tmp_path / "c", {"kafka-bootstrap-servers": secure_kafka.bootstrap,
                                                        "kafka": wrong})
    assert code == 1 and "authentication failed" in log.lower() and "Traceback" not in log, (code, log[-2000:])
