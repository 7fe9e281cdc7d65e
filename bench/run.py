"""``make bench``: Herald's throughput, latency, policy speed, replay speed and memory, measured the
same way every time on this machine, printed as a table and written to ``bench/results.json``.

    python bench/run.py [--events 20000] [--concurrency 32] [--rate 500] [--rate-seconds 20]
    python bench/run.py --phases e2e,fixed          # a subset (policy,e2e,fixed,direct,replay,two)
    python bench/run.py --soak 200000                # memory over a long run only (bench/soak.json)
    python bench/run.py --profile bench/profile     # bridge and worker under pyinstrument

It starts its own broker (temporary state directory, free ports on 127.0.0.1), the bench sink and
Herald's bridge and worker processes. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.devtools.kafka_local import KAFKA_VERSION, LocalKafka
from bench.load import Events, PostStats, ProcessSampler, post_closed_loop, post_fixed_rate, produce_direct
from bench.stack import (
    BenchHerald,
    BenchSinkProcess,
    bench_config,
    machine,
    received_at_ms,
    start_broker,
)

HERE = Path(__file__).resolve().parent
PHASES = ("policy", "e2e", "fixed", "direct", "replay", "two")


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return round(values[k], 1)


class Bench:
    def __init__(self, args: argparse.Namespace, kafka: LocalKafka, sink: BenchSinkProcess, workdir: Path) -> None:
        self.args = args
        self.kafka = kafka
        self.sink = sink
        self.workdir = workdir
        self.events = Events(uuid.uuid4().hex[:8], args.tracee_every)
        self.seq = 0
        self.results: dict[str, Any] = {}
        self.notes: dict[str, str] = {}

    def herald(self, workers: int = 1, profile_dir: Path | None = None) -> BenchHerald:
        cfg = bench_config(self.sink.url, self.args.partitions, self.args.action_concurrency)
        return BenchHerald(self.kafka, cfg, self.workdir,
                           workers=workers, profile_dir=profile_dir, profiler=self.args.profiler)

    def pids(self, herald: BenchHerald) -> dict[str, int]:
        """Herald's processes plus the broker, the sink and this load client (for CPU shares)."""
        pids = herald.pids()
        extra = {"kafka": self.kafka.pid(), "sink": self.sink.proc.pid if self.sink.proc else None,
                 "client": os.getpid()}
        return pids | {k: v for k, v in extra.items() if v is not None}

    def _timeout(self, n: int) -> float:
        return max(60.0, n / 100)

    # -- measurement helpers ------------------------------------------------------------------
    def run_phase(self, herald: BenchHerald, kind: str, n: int, rate: float = 0.0) -> dict[str, Any]:
        """Send ``n`` events (``http``: closed loop; ``rate``: fixed rate; ``direct``: produced to
        Kafka), wait for their deliveries and measure, sampling RSS and CPU of every process."""
        self.sink.reset()
        since_ms = int(time.time() * 1000) - 1
        seq, self.seq = self.seq, self.seq + n
        url = herald.url + "/"
        with ProcessSampler(self.pids(herald)) as sampler:
            if kind == "http":
                stats = asyncio.run(post_closed_loop(url, self.events, n, self.args.concurrency, seq))
            elif kind == "rate":
                stats = asyncio.run(post_fixed_rate(url, self.events, rate, n / rate, seq))
            else:
                stats = produce_direct(self.kafka.bootstrap, herald.prefix + "events", self.events, n, seq)
            count, _ = self.sink.wait(stats.accepted, self._timeout(n))
        out = self._measure(herald, stats, count, since_ms if kind != "direct" else None)
        out["rss_peak_mb"] = {k: round(v, 1) for k, v in sampler.peak.items()}
        out["cpu_s"] = sampler.cpu_s
        out["cpu_ms_per_event"] = {k: round(v * 1000 / count, 2) for k, v in sampler.cpu_s.items()} if count else {}
        return out

    def warm_up(self, herald: BenchHerald) -> None:
        """First deliveries open connections, read delivered keys back and fill caches."""
        n = 200
        stats = asyncio.run(post_closed_loop(herald.url + "/", self.events, n, 8, self.seq))
        self.seq += n
        count, _ = self.sink.wait(stats.accepted, 120, stall=60)
        if count < stats.accepted:
            raise RuntimeError(f"warm-up: only {count} of {stats.accepted} events were delivered")

    def _measure(self, herald: BenchHerald, stats: PostStats, count: int, since_ms: int | None) -> dict[str, Any]:
        # only this phase's events: a late delivery of an earlier phase was sent before it started
        records = [r for r in self.sink.records() if r[2] < 0 or r[2] >= stats.first_post * 1e6 - 1]
        count = len(records)
        last = max((r[0] for r in records), default=stats.last_ack)
        elapsed = last - stats.first_post
        from_send = [(at - sent / 1e6) * 1000 for at, _, sent in records if sent > 0]
        from_accept: list[float] = []
        if since_ms is not None:
            accepted = received_at_ms(self.kafka.bootstrap, herald.prefix + "events", since_ms)
            for at, key, _ in records:
                ms = accepted.get(key.split(":", 1)[0])
                if ms is not None:
                    from_accept.append(at * 1000 - ms)
        return {
            "posted": stats.accepted, "failed": stats.failed, "retried_503": stats.retried, "errors": stats.errors,
            "delivered": count, "duplicates": self.sink.count()["duplicates"],
            "seconds": round(elapsed, 2),
            "events_per_s": round(count / elapsed, 1) if elapsed > 0 else None,
            "ingest_events_per_s": round(stats.accepted / (stats.last_ack - stats.first_post), 1)
            if stats.last_ack > stats.first_post else None,
            "latency_ms": {"p50": pct(from_accept, 50), "p95": pct(from_accept, 95), "p99": pct(from_accept, 99),
                           "max": pct(from_accept, 100),
                           "mean": round(statistics.fmean(from_accept), 1) if from_accept else None},
            "latency_from_send_ms": {"p50": pct(from_send, 50), "p95": pct(from_send, 95),
                                     "p99": pct(from_send, 99)},
        }

    # -- phases -------------------------------------------------------------------------------
    def policy(self) -> None:
        from bench import policy_bench

        emb = policy_bench.run("embedded", self.args.policy_seconds)
        self.results.update(filter_evals_per_s=emb["filter_evals_per_s"], renders_per_s=emb["renders_per_s"],
                            policy_template=emb["template"], policy_event_bytes=emb["event_bytes"])
        try:
            opa = policy_bench.run("opa", self.args.policy_seconds)
        except Exception as exc:  # noqa: BLE001 - no OPA binary is a reported gap, not a failed bench
            self.results.update(opa_filter_evals_per_s=None, opa_renders_per_s=None)
            self.notes["opa"] = f"OPA not measured: {type(exc).__name__}: {exc}"
            return
        self.results.update(opa_filter_evals_per_s=opa["filter_evals_per_s"], opa_renders_per_s=opa["renders_per_s"])

    def one_worker(self, phases: set[str]) -> None:
        with self.herald(workers=1) as herald:
            self.warm_up(herald)
            if "e2e" in phases:
                e2e = self.run_phase(herald, "http", self.args.events)
                self.results["e2e"] = e2e
                self.results.update(
                    e2e_events_per_s=e2e["events_per_s"], e2e_p50_ms=e2e["latency_ms"]["p50"],
                    e2e_p95_ms=e2e["latency_ms"]["p95"], e2e_p99_ms=e2e["latency_ms"]["p99"],
                    bridge_rss_mb=e2e["rss_peak_mb"].get("bridge"), worker_rss_mb=e2e["rss_peak_mb"].get("worker"),
                )
            if "fixed" in phases:
                fixed = self.run_phase(herald, "rate", int(self.args.rate * self.args.rate_seconds), self.args.rate)
                fixed["rate"] = self.args.rate
                self.results["fixed_rate"] = fixed
                self.results.update(fixed_rate_p50_ms=fixed["latency_ms"]["p50"],
                                    fixed_rate_p99_ms=fixed["latency_ms"]["p99"])
                if self.args.low_rate:
                    # the pipeline's own latency, at a rate it sustains (no backlog)
                    low = self.run_phase(herald, "rate", int(self.args.low_rate * 10), self.args.low_rate)
                    low["rate"] = self.args.low_rate
                    self.results["low_rate"] = low
                    self.results.update(low_rate_p50_ms=low["latency_ms"]["p50"],
                                        low_rate_p99_ms=low["latency_ms"]["p99"])
            if "direct" in phases:
                direct = self.run_phase(herald, "direct", self.args.events)
                direct["produce_events_per_s"] = direct.pop("ingest_events_per_s")
                self.results["direct"] = direct
                self.results["direct_events_per_s"] = direct["events_per_s"]
            if "replay" in phases:
                self.replay(herald.prefix)

    def replay(self, prefix: str) -> None:
        try:
            from app.forensics.timeline import bench_read
        except ImportError as exc:
            self.results["replay_events_per_s"] = None
            self.notes["replay"] = f"herald timeline has no bench_read: {exc}"
            return
        n = self.args.events
        try:
            rate = bench_read(self.kafka.bootstrap, prefix, n)
        except Exception as exc:  # noqa: BLE001 - report the gap, keep the other figures
            self.results["replay_events_per_s"] = None
            self.notes["replay"] = f"replay read failed: {type(exc).__name__}: {exc}"
            return
        self.results["replay_events_per_s"] = round(rate, 1)
        self.results["replay_events"] = n

    def two_workers(self) -> None:
        with self.herald(workers=2) as herald:
            self.warm_up(herald)
            two = self.run_phase(herald, "http", self.args.events)
        self.results["two_workers"] = two
        self.results["two_workers_events_per_s"] = two["events_per_s"]

    def soak(self, n: int) -> dict[str, Any]:
        """``n`` events in chunks through one bridge and one worker, RSS sampled every few seconds."""
        chunk = min(n, 20000)
        done, delivered = 0, 0
        with self.herald(workers=1) as herald:
            started = time.time()
            with ProcessSampler(herald.pids(), interval=self.args.soak_interval) as sampler:
                while done < n:
                    k = min(chunk, n - done)
                    self.sink.reset()
                    stats = asyncio.run(post_closed_loop(herald.url + "/", self.events, k, self.args.concurrency,
                                                         self.seq))
                    self.seq += k
                    done += k
                    delivered += self.sink.wait(stats.accepted, self._timeout(k))[0]
                    print(f"soak: {done}/{n} posted, {delivered} delivered", file=sys.stderr)
            elapsed = time.time() - started
        rss = {name: {"first": round(s[0][1], 1), "last": round(s[-1][1], 1), "peak": round(max(v for _, v in s), 1),
                      "series": [[round(t - started, 1), round(v, 1)] for t, v in s]}
               for name, s in sampler.series.items() if s}
        return {"soak_events": n, "soak_delivered": delivered, "soak_seconds": round(elapsed, 1),
                "soak_events_per_s": round(delivered / elapsed, 1), "soak_rss_mb": rss}

    def profile(self, out: Path) -> None:
        """The e2e load with the bridge and worker under a profiler; text reports in ``out``."""
        import pstats
        import subprocess

        out.mkdir(parents=True, exist_ok=True)
        with self.herald(workers=1, profile_dir=out) as herald:
            asyncio.run(post_closed_loop(herald.url + "/", self.events, self.args.events, self.args.concurrency,
                                         self.seq))
            self.sink.wait(self.args.events, self._timeout(self.args.events))
        for name in ("bridge", "worker"):
            stats = out / f"{name}.pstats"
            if stats.exists():
                with open(out / f"{name}.txt", "w") as report:
                    pstats.Stats(str(stats), stream=report).sort_stats("tottime").print_stats(60)
                print(f"profile of the {name}: {out / (name + '.txt')}")
            session = out / f"{name}.pyisession"
            if session.exists():
                for renderer, suffix in (("text", "txt"), ("speedscope", "speedscope.json")):
                    subprocess.run([sys.executable, "-m", "pyinstrument", f"--load={session}", "-r", renderer,
                                    "--show-all", "-o", str(out / f"{name}.{suffix}")], check=False)
                print(f"profile of the {name}: {out / (name + '.txt')}")


def table(r: dict[str, Any]) -> str:
    def f(v: Any, unit: str = "") -> str:
        return "n/a" if v is None else (f"{v:,.0f}{unit}" if isinstance(v, (int, float)) else str(v))

    rows = [
        ("end to end (bridge -> sink)", f(r.get("e2e_events_per_s"), " ev/s"),
         f"p50 {f(r.get('e2e_p50_ms'))} / p95 {f(r.get('e2e_p95_ms'))} / p99 {f(r.get('e2e_p99_ms'))} ms"),
        (f"fixed rate {f(r.get('fixed_rate', {}).get('rate'))} ev/s", "",
         f"p50 {f(r.get('fixed_rate_p50_ms'))} / p99 {f(r.get('fixed_rate_p99_ms'))} ms"),
        (f"fixed rate {f(r.get('low_rate', {}).get('rate'))} ev/s", "",
         f"p50 {f(r.get('low_rate_p50_ms'))} / p99 {f(r.get('low_rate_p99_ms'))} ms"),
        ("direct Kafka ingestion", f(r.get("direct_events_per_s"), " ev/s"), ""),
        ("two workers (same group)", f(r.get("two_workers_events_per_s"), " ev/s"), ""),
        ("policy, embedded", f(r.get("filter_evals_per_s"), " filters/s"), f(r.get("renders_per_s"), " renders/s")),
        ("policy, OPA server", f(r.get("opa_filter_evals_per_s"), " filters/s"),
         f(r.get("opa_renders_per_s"), " renders/s")),
        ("replay / timeline read", f(r.get("replay_events_per_s"), " ev/s"), ""),
        ("peak RSS bridge / worker", f"{f(r.get('bridge_rss_mb'))} / {f(r.get('worker_rss_mb'))} MB", ""),
    ]
    cpu = r.get("e2e", {}).get("cpu_ms_per_event") or {}
    if cpu:
        rows.append(("CPU ms per event (e2e)", "", "  ".join(f"{k} {v:.2f}" for k, v in cpu.items())))
    lines = [(f"Herald bench {r['date']}  {r['cores']} cores  {r['machine']['cpu']}  N={r['n_events']}  "
             f"Kafka {r['kafka_version']}")]
    lines += [f"  {a:<30} {b:>20}   {c}" for a, b, c in rows]
    lines += [f"  note: {k}: {v}" for k, v in r.get("notes", {}).items()]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=int(os.environ.get("HERALD_BENCH_EVENTS", "20000")))
    p.add_argument("--concurrency", type=int, default=32, help="requests in flight (closed loop)")
    p.add_argument("--rate", type=float, default=500.0, help="events/s of the fixed-rate latency phase")
    p.add_argument("--rate-seconds", type=float, default=20.0)
    p.add_argument("--low-rate", type=float, default=100.0, help="events/s of a 10 s low-rate latency phase (0: skip)")
    p.add_argument("--tracee-every", type=int, default=4, help="every k-th event is the Tracee finding (0: none)")
    p.add_argument("--partitions", type=int, default=6)
    p.add_argument("--action-concurrency", type=int, default=None, help="webhook concurrency (Herald's default)")
    p.add_argument("--policy-seconds", type=float, default=2.0)
    p.add_argument("--phases", default=",".join(PHASES), help="comma-separated subset of " + ",".join(PHASES))
    p.add_argument("--soak", type=int, default=0, metavar="N", help="only the memory soak over N events")
    p.add_argument("--soak-interval", type=float, default=5.0, help="RSS sampling interval of the soak (s)")
    p.add_argument("--profile", type=Path, default=None, metavar="DIR", help="only profile bridge and worker")
    p.add_argument("--profiler", choices=("pyinstrument", "cprofile"), default="pyinstrument")
    p.add_argument("--keep", action="store_true", help="keep the work directory (logs, broker state)")
    p.add_argument("--out", type=Path, default=None, help="results file (default bench/results.json)")
    args = p.parse_args()
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    if unknown := phases - set(PHASES):
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from {','.join(PHASES)}")

    started = time.time()
    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    results: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                               "machine": machine(), "cores": os.cpu_count(), "kafka_version": KAFKA_VERSION,
                               "n_events": args.events, "concurrency": args.concurrency,
                               "event_mix": f"Aqua scan, every {args.tracee_every}th a Tracee finding"
                               if args.tracee_every else "Aqua scan only"}
    kafka: LocalKafka | None = None
    try:
        bench: Bench | None = None
        if phases - {"policy"} or args.soak or args.profile:
            print("starting a private Kafka broker ...", file=sys.stderr)
            kafka = start_broker(workdir / "kafka")
        with BenchSinkProcess(workdir) as sink:
            bench = Bench(args, kafka, sink, workdir)  # type: ignore[arg-type]
            results["mean_event_bytes"] = round(bench.events.mean_bytes())
            if args.profile:
                bench.profile(args.profile)
                return 0
            if args.soak:
                results.update(bench.soak(args.soak))
                out = args.out or HERE / "soak.json"
                out.write_text(json.dumps(results, indent=1) + "\n")
                print(json.dumps({k: v for k, v in results.items() if k != "soak_rss_mb"}, indent=1))
                for name, s in results["soak_rss_mb"].items():
                    print(f"{name}: RSS first {s['first']} MB, last {s['last']} MB, peak {s['peak']} MB")
                return 0
            if "policy" in phases:
                print("policy engines ...", file=sys.stderr)
                bench.policy()
            if phases & {"e2e", "fixed", "direct", "replay"}:
                print("one worker: end to end, fixed rate, direct, replay ...", file=sys.stderr)
                bench.one_worker(phases)
            if "two" in phases:
                print("two workers ...", file=sys.stderr)
                bench.two_workers()
            results.update(bench.results)
            if bench.notes:
                results["notes"] = bench.notes
    finally:
        if kafka is not None:
            kafka.stop()
        if args.keep:
            print(f"kept {workdir} (broker state, sink and Herald logs)", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    results["bench_seconds"] = round(time.time() - started, 1)
    results["machine"]["load_avg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    out = args.out or HERE / "results.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(table(results))
    print(f"wrote {out} ({results['bench_seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
