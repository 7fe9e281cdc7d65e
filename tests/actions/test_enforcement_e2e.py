"""Issue 5 acceptance on a real broker: events posted to the bridge drive the exec, http,
kubernetes and docker actions through router, action topics and worker (a subprocess). The
bridge requires a bearer token, which the harness sends: routes with these actions fire only
for authenticated events (tests/test_action_guard_e2e.py covers the unauthenticated side).

Peers: the fake Kubernetes API (tests/k8s_fake.py) with a kubeconfig pointing at it, Podman's
Docker API (the ``docker_host`` fixture), the harness's HTTP sink, and files the scripts write.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import FIXTURES, Herald, Sink, wait_until
from tests.k8s_fake import KubeFake, deployment_with_pods

OPERATOR = json.loads((FIXTURES / "postee" / "trivy-operator-input.json").read_text())
AQUA = json.loads((FIXTURES / "postee" / "aqua-input.json").read_text())
KIND = "event.raw.metadata.labels.trivy-operator\\.resource\\.kind"
NAME = "event.raw.metadata.labels.trivy-operator\\.resource\\.name"
IMAGE = "event.raw.report.registry.server/event.raw.report.artifact.repository:event.raw.report.artifact.tag"
NGINX_PODS = ["nginx-6d4cf56db6-00000", "nginx-6d4cf56db6-00001"]
FAST = {"enable": True, "retry-initial-backoff": "0.05s", "retry-max-backoff": "0.2s"}
# every route here can change systems: they fire only for authenticated events (app/routing/router.py)
TOKEN = "enforcement-e2e-token-5b1f"


def enforcement_config(kubeconfig: Path, docker_host: str, sink: Sink, out: Path) -> dict[str, Any]:
    critical = 'input.kind == "VulnerabilityReport"\ninput.report.summary.criticalCount > 0'
    target = {"kube-namespace": "default", "kube-config-file": str(kubeconfig),
              "kube-target-kind": KIND, "kube-target-name": NAME}
    docker = {"docker-host": docker_host, "docker-image-name": "localhost/busybox:latest",
              "docker-network": "none", "docker-volume-mounts": {str(out): "/out"}}
    return {
        "routes": [
            {"name": "r-label", "input": critical, "actions": ["label-deployment", "annotate-pods"],
             "template": "raw-json"},
            {"name": "r-remove", "input": critical, "actions": ["delete-vulnerable-pods"], "template": "raw-json"},
            {"name": "r-no-selector", "input": 'input.kind == "selector-test"', "actions": ["k8s-empty-selector"],
             "template": "raw-json"},
            {"name": "r-scan", "input": f'input.image == "{AQUA["image"]}"', "actions": ["docker-ok", "docker-3"],
             "template": "raw-json"},
            {"name": "r-placeholders", "input": 'input.kind == "placeholders"', "actions": ["exec-env", "http-body"],
             "template": "raw-json"},
            {"name": "r-hang", "input": 'input.kind == "hang"', "actions": ["exec-hang"], "template": "raw-json"},
        ],
        "templates": [{"name": "raw-json", "rego-package": "postee.rawmessage.json"}],
        "actions": [
            {"name": "label-deployment", "type": "kubernetes", **FAST, **target, "kube-apply-to": "owner",
             "kube-actions": {"labels": {"trivy.vulnerable": "true", "trivy.critical":
                                         "event.input.report.summary.criticalCount"}}},
            {"name": "annotate-pods", "type": "kubernetes", **FAST, **target, "kube-apply-to": "pods",
             "kube-actions": {"annotations": {"security.herald.io/image": IMAGE}}},
            {"name": "delete-vulnerable-pods", "type": "kubernetes", **FAST, **target, "kube-apply-to": "owner",
             "kube-delete-pods": True, "kube-delete-image": IMAGE},
            {"name": "k8s-empty-selector", "type": "kubernetes", **FAST, "kube-namespace": "default",
             "kube-config-file": str(kubeconfig), "kube-label-selector": "app=event.input.no.such.path",
             "kube-actions": {"labels": {"touched": "yes"}}},
            {"name": "docker-ok", "type": "docker", **FAST, **docker,
             "docker-cmd": ["sh", "-c", 'printf "%s" "$POSTEE_EVENT" > /out/docker-event; echo "read $0"',
                            "event.input.image"]},
            {"name": "docker-3", "type": "docker", **FAST, **docker,
             "docker-cmd": ["sh", "-c", "echo cannot scan event.input.image; exit 3"]},
            {"name": "exec-env", "type": "exec", **FAST,
             "env": ["TARGET=event.input.target.name:event.input.target.tag"],
             "exec-script": f'printf "%s|%s" "$TARGET" "$POSTEE_EVENT" > {out}/exec-out'},
            {"name": "http-body", "type": "http", **FAST, "url": sink.url + "/enforce", "method": "post",
             "headers": {"X-Herald": ["e2e"]},
             "body-content": '{"target": "event.input.target.name", "tag": "event.input.target.tag", '
                             '"n": event.input.target.list.#}'},
            {"name": "exec-hang", "type": "exec", **FAST, "retry-max-attempts": 2, "timeout": "1s",
             "exec-script": "echo about to hang; sleep 60"},
        ],
    }


@dataclass
class Stage:
    herald: Herald
    kube: KubeFake
    sink: Sink
    out: Path


@pytest.fixture(scope="module")
def stage(kafka: Any, docker_host: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stage]:
    workdir = tmp_path_factory.mktemp("enforcement")
    out = workdir / "out"
    out.mkdir()
    kube = KubeFake().start()
    deployment_with_pods(kube, "nginx", "nginx:1.16", "6d4cf56db6")
    deployment_with_pods(kube, "web", "httpd:2.4", "7f8b9c")
    kubeconfig = kube.write_kubeconfig(workdir / "kubeconfig")
    try:
        with Sink() as sink:
            sink.expect("/enforce", method="POST", json=True, headers={"X-Herald": "e2e"})
            cfg = enforcement_config(kubeconfig, docker_host, sink, out)
            with Herald(kafka, cfg, workdir, token=TOKEN) as herald:
                yield Stage(herald, kube, sink, out)
    finally:
        kube.stop()


def dead_letters(stage: Stage, action: str, event_id: str) -> list[dict[str, Any]]:
    """The dead letters of ``event_id`` by ``action`` (waits for at least one)."""
    return stage.herald.wait_record(f"dlq.{action}", lambda d: d.get("event_id") == event_id, 60,
                                    f"a dead letter of event {event_id}")


def test_trivy_operator_criticals_label_annotate_and_remove(stage: Stage) -> None:
    quiet = copy.deepcopy(OPERATOR)
    quiet["report"]["summary"]["criticalCount"] = 0
    quiet["metadata"]["labels"]["trivy-operator.resource.name"] = "web-7f8b9c"
    status, quiet_body = stage.herald.post(quiet)
    assert status == 200
    status, _ = stage.herald.post(OPERATOR)
    assert status == 200

    def labelled() -> bool:
        dep = stage.kube.get("deployments", "nginx")
        return bool(dep and dep["metadata"]["labels"].get("trivy.vulnerable") == "true")

    wait_until(labelled, 60, "the deployment named by the report to be labelled")
    dep = stage.kube.get("deployments", "nginx")
    assert dep is not None and dep["metadata"]["labels"]["trivy.critical"] == "2"
    wait_until(lambda: all(stage.kube.get("pods", p) is None for p in NGINX_PODS), 60, "vulnerable pods deleted")
    patched_pods = {r.path.rsplit("/", 1)[1] for r in stage.kube.requests
                    if r.method == "PATCH" and "/pods/" in r.path}
    # the pods were annotated unless the deletion got there first (the actions run concurrently)
    for r in stage.kube.requests:
        if r.method == "PATCH" and "/pods/" in r.path:
            image = "index.docker.io/library/nginx:1.16"
            assert r.body == {"metadata": {"annotations": {"security.herald.io/image": image}}}
    assert patched_pods <= set(NGINX_PODS)
    # the event without criticals matched no route and changed nothing
    assert stage.herald.wait_decision(quiet_body["event_id"])["actions"] == []
    assert all("web" not in r.path for r in stage.kube.changes())
    web = stage.kube.get("deployments", "web")
    assert web is not None and "trivy.vulnerable" not in web["metadata"]["labels"]


def test_selector_placeholder_resolving_to_nothing_is_dead_lettered(stage: Stage) -> None:
    before = len(stage.kube.changes())
    status, body = stage.herald.post({"kind": "selector-test"})
    assert status == 200
    [dead] = dead_letters(stage, "k8s-empty-selector", body["event_id"])
    assert dead["error_type"] == "PermanentActionError" and dead["attempts"] == 1
    assert "event.input.no.such.path resolved to nothing" in dead["error"]
    assert len(stage.kube.changes()) == before
    # never listed with the placeholder dropped (Postee's "app=" or an empty selector)
    assert not any(r.query.get("labelSelector") in ("app=", "") for r in stage.kube.requests)


def test_scan_event_runs_containers_exit_0_delivers_exit_3_dead_letters(stage: Stage) -> None:
    status, body = stage.herald.post(AQUA)
    assert status == 200
    event_file = stage.out / "docker-event"
    wait_until(event_file.exists, 120, "the container to write POSTEE_EVENT")
    rendered = json.loads(event_file.read_text())
    assert rendered["image"] == AQUA["image"] and rendered["postee"] == {"AquaServer": ""}
    [dead] = dead_letters(stage, "docker-3", body["event_id"])
    assert dead["status"] == 3 and dead["error_type"] == "PermanentActionError"
    assert "exited with code 3" in dead["error"] and f"cannot scan {AQUA['image']}" in dead["error"]
    stage.herald.wait_deliveries(body["event_id"], "docker-ok", timeout=120)
    assert stage.herald.read_topic("dlq.docker-ok") == []


def test_exec_and_http_get_placeholders_from_the_event(stage: Stage) -> None:
    event = {"kind": "placeholders", "target": {"name": "library/nginx", "tag": "1.16", "list": [1, 2, 3]}}
    status, _ = stage.herald.post(event)
    assert status == 200
    [req] = stage.sink.wait_for("/enforce", 1)
    assert req.method == "POST" and req.headers["X-Herald"] == "e2e"
    assert req.json() == {"target": "library/nginx", "tag": "1.16", "n": 3}
    out = stage.out / "exec-out"
    wait_until(out.exists, 60, "the exec script to run")
    target, _, posted = out.read_text().partition("|")
    assert target == "library/nginx:1.16"
    assert json.loads(posted)["target"]["list"] == [1, 2, 3]


def test_hanging_script_is_stopped_at_its_timeout_and_dead_lettered(stage: Stage) -> None:
    status, body = stage.herald.post({"kind": "hang"})
    assert status == 200
    [dead] = dead_letters(stage, "exec-hang", body["event_id"])
    assert dead["error_type"] == "RetryableActionError" and dead["attempts"] == 2
    assert "timed out after 1s" in dead["error"] and "about to hang" in dead["error"]
