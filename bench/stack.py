"""The system under test for the benchmarks: a private broker, the bench sink, Herald processes.

Everything binds 127.0.0.1 on free ports; the broker's state lives in a temporary directory that
is removed afterwards. Herald processes come from ``tests.harness.Herald`` (the same bridge and
worker subprocesses the end-to-end tests run), optionally under pyinstrument for profiling.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Self

from app.devtools.kafka_local import LocalKafka
from tests.harness import ROOT, Herald, free_port, wait_until


class BenchSinkProcess:
    """``bench/sink.py`` in its own process (so its CPU is not charged to the load client)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / "sink.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(self.url + path, method=method, data=b"" if method == "POST" else None)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    def count(self) -> dict[str, int]:
        return self._call("GET", "/__bench/count")  # type: ignore[no-any-return]

    def records(self) -> list[tuple[float, str, int]]:
        return [(float(at), str(key), int(sent)) for at, key, sent in self._call("GET", "/__bench/records")]

    def reset(self) -> None:
        self._call("POST", "/__bench/reset")

    def __enter__(self) -> Self:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.sink", "--port", str(self.port)], cwd=ROOT,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

        def up() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bench sink exited: {self.log.read_text()[-2000:]}")
            try:
                self.count()
            except OSError:
                return False
            return True

        wait_until(up, 30, "the bench sink")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def wait(self, n: int, timeout: float, stall: float = 30.0) -> tuple[int, float]:
        """Wait until ``n`` deliveries arrived; stop early after ``stall`` seconds without progress.
        Returns (count, seconds waited)."""
        started = time.time()
        last, last_change = -1, started
        while True:
            count = self.count()["count"]
            now = time.time()
            if count != last:
                last, last_change = count, now
            if count >= n or now - started > timeout or now - last_change > stall:
                return count, now - started
            time.sleep(0.05 if n - count < 200 else 0.25)


def bench_config(sink_url: str, partitions: int = 6, concurrency: int | None = None) -> dict[str, Any]:
    """One route with an ``input`` filter and the raw-json template, to one webhook (with Herald's
    default action concurrency unless ``concurrency`` is given)."""
    action: dict[str, Any] = {"name": "sink", "type": "webhook", "enable": True, "url": sink_url + "/hook",
                              "timeout": "10s"}
    if concurrency is not None:
        action["concurrency"] = concurrency
    return {
        "herald": {"partitions": partitions},
        "routes": [{"name": "bench", "input": "input.bench.seq >= 0", "actions": ["sink"], "template": "raw-json"}],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [action],
    }


class BenchHerald(Herald):
    """``tests.harness.Herald``; with ``profile_dir`` the bridge and workers run under a profiler and
    write their profile there when they stop: ``<name>.pyisession`` (pyinstrument, sampling every
    ``interval`` s) or ``<name>.pstats`` (cProfile: exact call counts, but slows small calls)."""

    def __init__(self, *args: Any, profile_dir: Path | None = None, profiler: str = "pyinstrument",
                 interval: float = 0.001, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.profile_dir = profile_dir
        self.profiler = profiler
        self.interval = interval

    def _spawn(self, name: str, command: str) -> subprocess.Popen[bytes]:
        if self.profile_dir is None:
            return super()._spawn(name, command)
        log = self.workdir / f"{self.prefix.rstrip('.')}-{name}.log"
        self.logs[name] = log
        if self.profiler == "cprofile":
            prof = ["-m", "cProfile", "-o", str(self.profile_dir / f"{name}.pstats")]
        else:
            prof = ["-m", "pyinstrument", "-i", str(self.interval), "-r", "pyisession",
                    "-o", str(self.profile_dir / f"{name}.pyisession")]
        cmd = [sys.executable, *prof, "-m", "app.cli", command, "--config", str(self.cfg_path)]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        self.spawned.append((name, proc))  # stopped (SIGTERM, then the profiler writes) at __exit__
        return proc

    def __enter__(self) -> Self:
        super().__enter__()
        return self

    def pids(self) -> dict[str, int]:
        return {name: proc.pid for name, proc in self.procs.items() if proc.poll() is None}


def start_broker(state_dir: Path) -> LocalKafka:
    broker = LocalKafka(state_dir, port=free_port(), controller_port=free_port())
    broker.start(timeout=120)
    return broker


def received_at_ms(bootstrap: str, topic: str, since_ms: int | None) -> dict[str, int]:
    """event id -> the bridge's ``herald-received-at`` (ms), read back from the events topic."""
    from app.kafka.window import WindowReader
    from app.routing.router import H_EVENT_ID, H_RECEIVED_AT

    out: dict[str, int] = {}
    for rec in WindowReader(bootstrap, topic, since_ms, None):
        eid, at = rec.headers.get(H_EVENT_ID), rec.headers.get(H_RECEIVED_AT, "")
        if eid and at.isdigit():
            out[eid] = int(at)
    return out


def machine() -> dict[str, Any]:
    import platform

    import psutil  # type: ignore[import-untyped]

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "load_avg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
