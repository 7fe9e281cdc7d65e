"""The container image for real: the repository's Dockerfile built with Podman and run.

``scripts/build-image.sh build`` builds it (no registry is reachable here: the Python base is a
Debian bookworm root file system made by mmdebstrap, imported into Podman and passed to the
Dockerfile by digest); Podman's layer cache and the build's pip cache live in .cache/image, so a
second run takes seconds. A build that fails, or a Podman that cannot run, FAILS these tests.

The e2e runs the image's worker and bridge as two containers the way a cluster would: uid 1099,
``--read-only`` root file system (tmpfs only on /tmp and the spool directory), no capabilities,
no-new-privileges, the bridge's bearer token from a mounted file (``file:/path``). They use host
networking on loopback to reach the suite's broker (which advertises 127.0.0.1), so the test
points the bridge at 127.0.0.1 instead of the image's 0.0.0.0; the image's own 0.0.0.0 default is
checked in a container without network: without ``herald.auth`` it refuses to start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.ingest.bridge import exposure_problem
from actions import load_config
from app.config.settings import ENV_OVERRIDES
from tests.harness import ROOT, TRACEBACK, Herald, Sink, free_port, wait_until

BUILD = ROOT / "scripts" / "build-image.sh"
IMAGE = "localhost/herald:e2e"
TOKEN = "image-e2e-" + uuid.uuid4().hex
# There is no systemd here to run the HEALTHCHECK on a timer (podman logs "unable to get systemd
# connection" at each start and carries on); `podman healthcheck run` runs it on demand.
# a cold build (base packages, wheels) on two busy cores takes minutes; later ones seconds
pytestmark = pytest.mark.timeout(1800)


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """podman on the storage scripts/build-image.sh builds into."""
    return subprocess.run(["bash", str(BUILD), "podman", *args], check=False, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def image() -> str:
    start = time.monotonic()
    proc = subprocess.run(["bash", str(BUILD), "build", IMAGE], check=False, capture_output=True, text=True,
                          timeout=1700)
    if proc.returncode != 0:
        pytest.fail(f"the image could not be built ({time.monotonic() - start:.0f}s):\n{proc.stderr[-5000:]}",
                    pytrace=False)
    return IMAGE


# --- what the image is -----------------------------------------------------------------------


def test_dockerfile_pins_its_base_by_digest() -> None:
    text = (ROOT / "Dockerfile").read_text()
    lines = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    args = {ln[1].split("=", 1)[0]: ln[1].split("=", 1)[1] for ln in lines if ln[0] == "ARG" and "=" in ln[1]}
    stages: set[str] = set()
    for ln in (ln for ln in lines if ln[0] == "FROM"):
        ref = ln[1]
        if ref.startswith("${") and ref.endswith("}"):
            ref = args[ref[2:-1]]
        assert ref in stages or "@sha256:" in ref, f"FROM {ln[1]} is not pinned by digest"
        if ref not in stages:
            assert len(ref.split("@sha256:")[1]) == 64 and all(c in "0123456789abcdef" for c in ref.split(":")[-1])
        if len(ln) == 4 and ln[2].upper() == "AS":
            stages.add(ln[3])
    assert stages == {"build"}


def test_image_runs_as_numeric_non_root_user_with_a_healthcheck(image: str) -> None:
    proc = podman("image", "inspect", image)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)[0]
    config = info["Config"]
    assert config["User"] == "1099:1099"
    assert config["Entrypoint"] == ["herald"] and config["Cmd"] == ["run"]
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["POSTEE_HTTP"] == "0.0.0.0:8082" and env["POSTEE_CFG"] == "/config/cfg.yaml"
    assert env["HERALD_SPOOL_DIR"] == "/var/spool/herald"
    check = info["Healthcheck"]  # podman shows the docker-format config's Healthcheck at the top
    assert check["Test"][0] == "CMD" and "/healthz" in check["Test"][-1] and "curl" not in " ".join(check["Test"])
    assert check["Interval"] > 0 and check["Retries"] == 3
    assert set(config["ExposedPorts"]) == {"8082/tcp", "8083/tcp"}


def test_the_image_default_listener_needs_authentication(image: str, tmp_path: Path) -> None:
    """The image's bridge on 0.0.0.0:8082, in a container with no network at all: without
    herald.auth it exits 2 naming the setting, before binding or reaching Kafka; with a token file
    (and the spool's tmpfs, which a read-only root needs) it listens there and is healthy."""
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump({"routes": [], "actions": []}))
    cfg.chmod(0o644)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o644)
    isolated = ["--network", "none", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                "-v", f"{cfg}:/config/cfg.yaml:ro", "-e", "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9"]
    proc = podman("run", "--rm", *isolated, image, "bridge")
    assert proc.returncode == 2, proc.stdout + proc.stderr  # Herald's exit code of a config error
    assert ("herald.http-listen 0.0.0.0:8082 is not a loopback address and herald.auth configures no "
            "authentication") in proc.stderr, proc.stderr
    with_token = [*isolated, "-v", f"{token}:/etc/herald/token:ro",
                  "-e", "HERALD_AUTH_BEARER_TOKENS=file:/etc/herald/token"]
    proc = podman("run", "--rm", *with_token, image, "bridge")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "herald.spool.dir: cannot use spool directory /var/spool/herald: Read-only file system" in proc.stderr
    assert "not a loopback address" not in proc.stderr and TRACEBACK not in proc.stderr, proc.stderr
    c = Container(image, "bridge", [*with_token, "--tmpfs", "/var/spool/herald:rw,size=16m,U"])
    try:
        def healthy() -> bool:
            assert c.state()["Running"], c.logs()[-3000:]
            return podman("healthcheck", "run", c.name).returncode == 0

        wait_until(healthy, 60, f"the HEALTHCHECK of {c.name}", interval=1)
        assert "bridge listening on http://0.0.0.0:8082" in c.logs(), c.logs()[-3000:]
        assert c.stop() == 0 and TRACEBACK not in c.logs(), c.logs()[-3000:]
    finally:
        c.remove()


# --- bridge and worker containers on the suite's broker ----------------------------------------


class Container:
    """One detached container of the image; removed (forcibly if need be) by ``remove``."""

    def __init__(self, image: str, role: str, options: list[str], command: tuple[str, ...] = ()) -> None:
        self.name = f"herald-e2e-{role}-{uuid.uuid4().hex[:8]}"
        proc = podman("run", "--detach", "--name", self.name, *options, image, *(command or (role,)))
        assert proc.returncode == 0, f"podman run {role} failed: {proc.stderr}"

    def state(self) -> dict[str, Any]:
        proc = podman("inspect", "--format", "{{json .State}}", self.name)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def logs(self) -> str:
        proc = podman("logs", self.name)
        return proc.stdout + proc.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *command)

    def stop(self) -> int:
        """SIGTERM, then the exit code (podman kills it after 60 s)."""
        proc = podman("stop", "--time", "60", self.name, timeout=90)
        assert proc.returncode == 0, proc.stderr
        return int(self.state()["ExitCode"])

    def remove(self) -> None:
        podman("rm", "--force", "--time", "5", self.name)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        return 0, str(exc)


def wait_ready(container: Container, url: str, timeout: float = 120) -> None:
    def ready() -> bool:
        state = container.state()
        if not state["Running"]:
            raise AssertionError(f"{container.name} exited with {state['ExitCode']}:\n{container.logs()[-4000:]}")
        return http("GET", url)[0] == 200

    try:
        wait_until(ready, timeout, f"{url} of {container.name}", interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nlog tail:\n{container.logs()[-4000:]}") from None


@pytest.fixture
def deployed(image: str, kafka: Any, tmp_path: Path) -> Iterator[tuple[Herald, Sink, dict[str, Container], int]]:
    with Sink() as sink:
        sink.expect("/hook", method="POST", content_type="application/json", json=True)
        cfg = {
            "routes": [{"name": "everything", "actions": ["hook"], "template": "raw-json"}],
            "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
            "actions": [{"name": "hook", "type": "webhook", "enable": True, "url": sink.url + "/hook",
                         "timeout": "5s"}],
        }
        # the harness's topic prefix, consumer group and topic readers; the processes are containers
        herald = Herald(kafka, cfg, tmp_path)
        herald.token = TOKEN  # posts carry it; the containers read it from a mounted file
        herald.cfg_path.chmod(0o644)
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        token.chmod(0o644)
        admin_port = free_port()
        hardened = [
            "--network", "host", "--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
            "-v", f"{herald.cfg_path}:/config/cfg.yaml:ro", "-v", f"{token}:/etc/herald/token:ro",
            "-e", "HERALD_AUTH_BEARER_TOKENS=file:/etc/herald/token",
        ]
        containers: dict[str, Container] = {}
        try:
            containers["worker"] = Container(image, "worker", [
                *hardened, "-e", f"HERALD_ADMIN_LISTEN=127.0.0.1:{admin_port}"])
            wait_ready(containers["worker"], f"http://127.0.0.1:{admin_port}/readyz")
            containers["bridge"] = Container(image, "bridge", [
                # the spool's tmpfs, owned by the container's user (U)
                *hardened, "--tmpfs", "/var/spool/herald:rw,size=64m,U",
                "-e", f"POSTEE_HTTP=127.0.0.1:{herald.port}"])
            wait_ready(containers["bridge"], herald.url + "/readyz")
            yield herald, sink, containers, admin_port
        finally:
            for c in containers.values():
                c.remove()


def test_an_event_posted_to_the_bridge_container_is_delivered_by_the_worker_container(
        deployed: tuple[Herald, Sink, dict[str, Container], int]) -> None:
    herald, sink, containers, admin_port = deployed
    bridge, worker = containers["bridge"], containers["worker"]

    status, _ = herald.post({"image": "alpine:3.20"}, headers={"Authorization": "Bearer wrong"})
    assert status == 403
    status, _ = http("POST", herald.url + "/", b'{"image": "alpine:3.20"}', {"Content-Type": "application/json"})
    assert status == 401

    event = {"image": "alpine:3.20", "vulnerability_summary": {"critical": 2}, "marker": uuid.uuid4().hex}
    status, body = herald.post(event)
    assert status == 200, body
    delivered = sink.wait_for("/hook", 1, timeout=90)
    assert json.loads(delivered[0].body)["marker"] == event["marker"]
    assert herald.wait_deliveries(body["event_id"], "hook")[0]["outcome"] == "delivered"

    # the hardening holds inside the running containers
    for c in (bridge, worker):
        who = c.exec("python3", "-c", "import os; print(os.getuid(), os.getgid())")
        assert who.stdout.split() == ["1099", "1099"], who.stdout + who.stderr
        mounts = c.exec("python3", "-c", "print(open('/proc/mounts').read())").stdout.splitlines()
        root = [ln.split() for ln in mounts if ln.strip() and ln.split()[1] == "/"]
        assert root and root[-1][3].split(",")[0] == "ro", mounts
        write = c.exec("python3", "-c", "open('/opt/herald/x', 'w')")
        assert write.returncode != 0 and ("Read-only file system" in write.stderr
                                          or "Permission denied" in write.stderr), write.stderr
        caps = c.exec("python3", "-c", "print(open('/proc/self/status').read())")
        eff = next(ln.split()[1] for ln in caps.stdout.splitlines() if ln.startswith("CapEff:"))
        assert int(eff, 16) == 0, caps.stdout
        # the image's HEALTHCHECK: the bridge's /healthz, or in a worker the admin listener's
        check = podman("healthcheck", "run", c.name)
        assert check.returncode == 0, f"{c.name}: {check.stdout}{check.stderr}"

    # the worker's admin listener and the bridge expose their metrics from inside the image
    status, text = http("GET", f"http://127.0.0.1:{admin_port}/metrics")
    assert status == 200 and "herald_" in text, text[:500]
    status, text = http("GET", herald.url + "/metrics")
    assert status == 200 and "herald_" in text, text[:500]

    # SIGTERM: both stop cleanly, with exit code 0, and logged no traceback
    assert bridge.stop() == 0, bridge.logs()[-3000:]
    assert worker.stop() == 0, worker.logs()[-3000:]
    for c in (bridge, worker):
        assert TRACEBACK not in c.logs(), c.logs()[-4000:]


def test_the_healthcheck_fails_when_the_bridge_does_not_answer(image: str, tmp_path: Path) -> None:
    """The HEALTHCHECK can fail: a container whose bridge is not listening is unhealthy."""
    c = Container(image, "idle", ["--network", "none", "--read-only", "--entrypoint", "sleep"], ("600",))
    try:
        assert c.state()["Running"]
        check = podman("healthcheck", "run", c.name)
        assert check.returncode != 0 and "unhealthy" in check.stdout + check.stderr, check.stdout + check.stderr
    finally:
        c.remove()


# --- docker-compose.yml ----------------------------------------------------------------------
# Checked with podman-compose's own parser (a test extra), not run: its Kafka and OPA images come
# from a registry, and none is reachable here. What it runs of Herald is the image tested above.

COMPOSE = ROOT / "docker-compose.yml"


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).parent / "podman-compose"
    return subprocess.run([str(tool), "-f", str(COMPOSE), "config"], check=False, capture_output=True, text=True,
                          timeout=120, cwd=ROOT,
                          env={**{k: v for k, v in os.environ.items() if k != "HERALD_TOKEN"}, **env})


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text[text.rindex("\nFROM "):].splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in line[4:].split()))
    return env


def test_compose_requires_a_bridge_token() -> None:
    proc = compose_config({})
    assert proc.returncode != 0
    assert "required variable HERALD_TOKEN is missing a value" in proc.stdout + proc.stderr, proc.stderr[-2000:]


def test_compose_runs_the_hardened_image_with_a_config_herald_accepts() -> None:
    proc = compose_config({"HERALD_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr[-3000:]
    services = yaml.safe_load(proc.stdout)["services"]
    assert set(services) == {"kafka", "opa", "bridge", "worker"}
    image_env = dockerfile_env()
    known = {n for names, _ in ENV_OVERRIDES for n in names}
    for name in ("bridge", "worker"):
        svc = services[name]
        assert Path(svc["build"]["context"]).resolve() == ROOT and (ROOT / "Dockerfile").is_file()
        assert svc["image"] == "localhost/herald:compose" and svc["command"] == [name]
        assert svc["read_only"] is True and svc["tmpfs"] == ["/tmp"]
        assert svc["cap_drop"] == ["ALL"] and svc["security_opt"] == ["no-new-privileges"]
        assert set(svc["environment"]) <= known, set(svc["environment"]) - known
        mounts = {m.split(":")[1]: m.split(":")[0] for m in svc["volumes"]}
        assert mounts["/config/cfg.yaml"] == "./examples/cfg.yaml" and image_env["POSTEE_CFG"] == "/config/cfg.yaml"
        assert image_env["HERALD_TEMPLATE_DIRS"] in mounts and image_env["REGO_FILTERS_PATH"] in mounts
        for source in mounts.values():
            assert source.startswith("herald-") or (ROOT / source).exists(), source
        # the config Herald would load in the container: the example config with this environment
        env = {**image_env, **{k: str(v) for k, v in svc["environment"].items()}}
        env["REGO_FILTERS_PATH"] = str(ROOT / mounts[image_env["REGO_FILTERS_PATH"]])
        env["HERALD_TEMPLATE_DIRS"] = str(ROOT / mounts[image_env["HERALD_TEMPLATE_DIRS"]])
        config = load_config(str(ROOT / "examples" / "cfg.yaml"), environ=env)
        assert config.herald.kafka_bootstrap_servers == "kafka:9092"
        assert [t.reveal() for t in config.herald.auth.bearer_tokens] == [TOKEN]
        assert config.herald.http_listen == "0.0.0.0:8082"
        assert exposure_problem(config) is None  # 0.0.0.0 with a token: the bridge starts
    bridge = services["bridge"]
    assert bridge["ports"] == ["127.0.0.1:8082:8082"]
    assert f"herald-spool:{image_env['HERALD_SPOOL_DIR']}" in bridge["volumes"]
    assert "herald-spool" in yaml.safe_load(proc.stdout)["volumes"]
    assert services["worker"]["deploy"]["replicas"] == 2
