"""Issue 15: a real Prometheus (scripts/build-prometheus.sh) scrapes Herald's bridge and worker.

Prometheus scrapes both every second; its query API must then show the counts of the run, and
every query of the Grafana dashboard must be valid PromQL that Prometheus evaluates.
"""

from __future__ import annotations

import json
import math
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.harness import ROOT, Herald, Sink, free_port, wait_until
from tests.test_grafana_dashboard import load, panels

BUILD = ROOT / "scripts" / "build-prometheus.sh"


@pytest.fixture(scope="module")
def prometheus_bin() -> Path:
    done = subprocess.run(["bash", str(BUILD)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"building Prometheus failed:\n{done.stderr[-4000:]}", pytrace=False)
    return Path(done.stdout.strip().splitlines()[-1])


class Prometheus:
    def __init__(self, binary: Path, workdir: Path, targets: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [address]}]}
                               for job, address in targets.items()],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = workdir / "prometheus.log"
        self.args = [str(binary), f"--config.file={workdir / 'prometheus.yml'}",
                     f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}"]

    def __enter__(self) -> Prometheus:  # noqa: PYI034
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as resp:
                    return resp.status == 200
            except (urllib.error.URLError, ConnectionError):
                return False

        try:
            wait_until(ready, 60, "Prometheus to be ready")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("prometheus did not stop within 30s of SIGTERM") from None
        assert code == 0, f"prometheus exited with {code}:\n{self.log.read_text()[-3000:]}"

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def value(self, query: str) -> float | None:
        """The single value of an instant query (None when it returns nothing)."""
        result = self.api("query", query=query)["result"]
        assert len(result) <= 1, f"{query}: {result}"
        return float(result[0]["value"][1]) if result else None


@pytest.fixture
def sink() -> Iterator[Sink]:
    with Sink() as s:
        s.expect("/ok", method="POST", content_type="application/json", json=True)
        s.script("/flaky", [503], then=200)
        yield s


def test_prometheus_scrapes_bridge_and_worker(kafka: Any, tmp_path: Path, sink: Sink, prometheus_bin: Path) -> None:
    fast = {"retry-initial-backoff": "0.05s", "retry-max-backoff": "0.1s", "timeout": "5s"}
    cfg = {
        "routes": [{"name": "all", "actions": ["ok", "flaky"], "template": "raw"}],
        "templates": [{"name": "raw", "rego-package": "postee.rawmessage.json"}],
        "actions": [{"name": n, "type": "webhook", "enable": True, "url": f"{sink.url}/{n}", **fast}
                    for n in ("ok", "flaky")],
    }
    n = 5
    with Herald(kafka, cfg, tmp_path) as herald:
        admin = herald.admin_url().removeprefix("http://")
        bridge = herald.url.removeprefix("http://")
        with Prometheus(prometheus_bin, tmp_path, {"herald-bridge": bridge, "herald-worker": admin}) as prom:
            def targets_up() -> bool:
                active = prom.api("targets")["activeTargets"]
                return len(active) == 2 and all(t["health"] == "up" for t in active)

            wait_until(targets_up, 30, "both Herald targets to be up in Prometheus")
            for i in range(n):
                status, _ = herald.post({"n": i})
                assert status == 200
            sink.wait_for("/ok", n)
            sink.wait_for("/flaky", n + 1)

            want = {
                'sum(herald_bridge_requests_total{job="herald-bridge", status="200"})': n,
                'herald_router_events_total{job="herald-worker"}': n,
                'herald_route_events_total{job="herald-worker", route="all", matched="true"}': n,
                'herald_deliveries_total{job="herald-worker", action="ok", outcome="delivered"}': n,
                'herald_deliveries_total{job="herald-worker", action="flaky", outcome="delivered"}': n,
                'herald_deliveries_total{job="herald-worker", action="flaky", outcome="retried"}': 1,
                'herald_deliveries_total{job="herald-worker", action="flaky", outcome="failed"}': 1,
                'sum(herald_dead_letters_total{job="herald-worker"})': 0,
            }

            def scraped() -> bool:
                return all(prom.value(q) == v for q, v in want.items())

            try:
                wait_until(scraped, 30, "Prometheus to hold the run's counts")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {({q: prom.value(q) for q in want})}") from None
            p99 = prom.value('histogram_quantile(0.99, sum by (le) (rate(herald_delivery_latency_seconds_bucket'
                             '{job="herald-worker", action="ok"}[1m])))')
            assert p99 is not None and 0 < p99 < 60 and not math.isnan(p99)
            def lag_zero() -> bool:  # every partition of the events topic, all committed
                lag = prom.api("query", query=f'herald_consumer_lag_messages{{job="herald-worker", '
                                              f'topic="{herald.prefix}events"}}')["result"]
                return (sorted(s["metric"]["partition"] for s in lag) == ["0", "1", "2"]
                        and all(float(s["value"][1]) == 0 for s in lag))

            wait_until(lag_zero, 40, "a lag of 0 on each partition of the events topic in Prometheus")

            # every dashboard query is valid PromQL for a real Prometheus, and the core ones have data
            with_data = 0
            for panel in panels(load()):
                for target in panel.get("targets") or []:
                    expr = (target["expr"].replace("$__rate_interval", "1m").replace("$__range", "5m")
                            .replace("$job", ".*"))
                    result = prom.api("query", query=expr)["result"]
                    with_data += bool(result)
            assert with_data >= 15, with_data
