"""kubernetes action: the official client against tests/k8s_fake.py (a local API server)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from actions._kubenames import canonical_image, resource_of, sanitize_label_value
from actions.kubernetes import KubernetesAction, KubernetesConfig
from app.config.model import validate_model
from app.errors import ConfigError, PermanentActionError, RetryableActionError
from tests.actions._msg import fixture, message
from tests.k8s_fake import KubeFake, deployment_with_pods, pod, statefulset_with_pods

KIND = "event.raw.metadata.labels.trivy-operator\\.resource\\.kind"
NAME = "event.raw.metadata.labels.trivy-operator\\.resource\\.name"
IMAGE = "event.raw.report.registry.server/event.raw.report.artifact.repository:event.raw.report.artifact.tag"
NGINX_PODS = ["nginx-6d4cf56db6-00000", "nginx-6d4cf56db6-00001"]
WEB_PODS = ["web-7f8b9c-00000", "web-7f8b9c-00001"]


@pytest.fixture
def fake(tmp_path: Path) -> Iterator[KubeFake]:
    server = KubeFake().start()
    deployment_with_pods(server, "nginx", "nginx:1.16", "6d4cf56db6")
    deployment_with_pods(server, "web", "docker.io/library/httpd:2.4", "7f8b9c")
    server.write_kubeconfig(tmp_path / "kubeconfig")
    server.requests.clear()
    yield server
    server.stop()


def config(fake: KubeFake, tmp_path: Path, **cfg: Any) -> KubernetesConfig:
    data = {"name": "k8s", "type": "kubernetes", "kube-namespace": "default",
            "kube-config-file": str(tmp_path / "kubeconfig"), **cfg}
    obj, _ = validate_model(KubernetesConfig, data, "actions[5]")
    return obj


async def run(fake: KubeFake, tmp_path: Path, desc: str = "{}", event: dict[str, Any] | None = None,
              **cfg: Any) -> None:
    act = KubernetesAction(config(fake, tmp_path, **cfg))
    await act.start()
    try:
        await act.deliver(message(desc, event))
    finally:
        await act.close()


def labels(fake: KubeFake, kind: str, name: str) -> dict[str, str]:
    obj = fake.get(kind, name)
    assert obj is not None, f"{kind}/{name} is gone"
    return dict(obj["metadata"].get("labels") or {})


def annotations(fake: KubeFake, kind: str, name: str) -> dict[str, str]:
    obj = fake.get(kind, name)
    assert obj is not None
    return dict(obj["metadata"].get("annotations") or {})


# --- pure helpers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("library/nginx:1.16", "library_nginx_1.16"),
        ("-._x_.-", "x"),
        ("a" * 70, "a" * 63),
        ("a" * 62 + "-b", "a" * 62),
        ("ü", ""),
        ("CVE-2019-20367", "CVE-2019-20367"),
    ],
)
def test_sanitize_label_value(raw: str, clean: str) -> None:
    assert sanitize_label_value(raw) == clean


@pytest.mark.parametrize(
    ("ref", "canonical"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.16", "docker.io/library/nginx:1.16"),
        ("library/nginx:1.16", "docker.io/library/nginx:1.16"),
        ("index.docker.io/library/nginx:1.16", "docker.io/library/nginx:1.16"),
        ("quay.io/org/app@sha256:abc", "quay.io/org/app@sha256:abc"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
    ],
)
def test_canonical_image(ref: str, canonical: str) -> None:
    assert canonical_image(ref) == canonical


def test_kinds_accept_trivy_operator_spelling() -> None:
    assert [resource_of(k) for k in ("ReplicaSet", "pod", "Deployments", "CronJob")] == [
        "replicasets", "pods", "deployments", None,
    ]


# --- config ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "needle"),
    [
        ({"kube-namespace": None}, "kube-namespace"),
        ({"kube-namespace": "Bad_NS"}, "kube-namespace"),
        ({"kube-label-selector": ""}, "'kube-label-selector' or 'kube-target-name'"),
        ({"kube-actions": {}}, "nothing to do"),
        ({"kube-actions": {"label": {"a": "b"}}}, "kube-actions.label"),
        ({"kube-actions": {"labels": {"bad key!": "x"}}}, "invalid key 'bad key!'"),
        ({"kube-actions": {"labels": {"ok": "not valid!"}}}, "not a valid label value"),
        ({"kube-target-kind": "cronjobs"}, "unsupported kind 'cronjobs'"),
        ({"kube-target-name": "Not_A_Name"}, "not a valid object name"),
        ({"kube-apply-to": "everything"}, "kube-apply-to"),
        ({"kube-delete-image": "nginx"}, "only makes sense with 'kube-delete-pods: true'"),
        ({"kube-delete-pods": "yes"}, "kube-delete-pods"),
    ],
)
def test_config_errors(cfg: dict[str, Any], needle: str, tmp_path: Path) -> None:
    data = {"name": "k", "type": "kubernetes", "kube-namespace": "default", "kube-config-file": "/k",
            "kube-label-selector": "app=x", "kube-actions": {"labels": {"a": "b"}}, **cfg}
    with pytest.raises(ConfigError) as err:
        validate_model(KubernetesConfig, data, "actions[5]")
    assert needle in str(err.value)
    assert "actions[5]" in str(err.value)


def test_kube_config_file_required_outside_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    data = {"name": "k", "type": "kubernetes", "kube-namespace": "default",
            "kube-label-selector": "app=x", "kube-actions": {"labels": {"a": "b"}}}
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ConfigError, match="'kube-config-file' is required"):
        validate_model(KubernetesConfig, data, "actions[5]")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    cfg, _ = validate_model(KubernetesConfig, data, "actions[5]")
    assert cfg.kube_target_kind == "pods" and cfg.kube_patch_type == "merge"


# --- Postee's form ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_postee_form_labels_and_annotates_selected_pods(fake: KubeFake, tmp_path: Path) -> None:
    desc = json.dumps({"image": "library/nginx:1.16", "owner": "team-a"})
    await run(fake, tmp_path, desc, **{
        "kube-label-selector": "app=nginx",
        "kube-actions": {"labels": {"scanned": "true", "image": "event.input.image"},
                         "annotations": {"herald/owner": "event.input.owner", "note": "raw text"}},
    })
    for name in NGINX_PODS:
        assert labels(fake, "pods", name)["image"] == "library_nginx_1.16"
        assert labels(fake, "pods", name)["scanned"] == "true"
        assert labels(fake, "pods", name)["app"] == "nginx"  # merged, not replaced
        assert annotations(fake, "pods", name) == {"herald/owner": "team-a", "note": "raw text"}
    for name in WEB_PODS:
        assert "scanned" not in labels(fake, "pods", name)
    patches = [r for r in fake.changes() if r.method == "PATCH"]
    assert sorted(r.path.rsplit("/", 1)[1] for r in patches) == NGINX_PODS
    assert {r.content_type for r in patches} == {"application/merge-patch+json"}
    assert patches[0].body == {"metadata": {"labels": {"scanned": "true", "image": "library_nginx_1.16"},
                                            "annotations": {"herald/owner": "team-a", "note": "raw text"}}}


@pytest.mark.asyncio
async def test_selector_placeholder_mid_string_is_resolved_and_sanitised(fake: KubeFake, tmp_path: Path) -> None:
    fake.add(pod("tagged", "nginx:1.16", {"image": "library_nginx_1.16"}))
    await run(fake, tmp_path, json.dumps({"img": "library/nginx:1.16"}), **{
        "kube-label-selector": "image=event.input.img",
        "kube-actions": {"labels": {"hit": "yes"}},
    })
    assert labels(fake, "pods", "tagged")["hit"] == "yes"
    assert [r.path.rsplit("/", 1)[1] for r in fake.changes()] == ["tagged"]


@pytest.mark.asyncio
@pytest.mark.parametrize("desc", ['{"other": 1}', "not json at all"])
async def test_selector_placeholder_resolving_to_nothing_touches_nothing(
    fake: KubeFake, tmp_path: Path, desc: str
) -> None:
    with pytest.raises(PermanentActionError, match=r"event.input.app resolved to nothing.*no object was changed"):
        await run(fake, tmp_path, desc, **{
            "kube-label-selector": "app=event.input.app",
            "kube-actions": {"labels": {"x": "y"}},
        })
    assert fake.requests == []  # not even a list


@pytest.mark.asyncio
async def test_non_json_description_becomes_the_label_value_as_postee(fake: KubeFake, tmp_path: Path) -> None:
    await run(fake, tmp_path, "Critical: library/nginx:1.16", **{
        "kube-label-selector": "app=nginx", "kube-actions": {"labels": {"finding": "event.input.x"}},
    })
    assert labels(fake, "pods", NGINX_PODS[0])["finding"] == "Critical__library_nginx_1.16"


# --- the trivy-operator stories --------------------------------------------------------------


@pytest.mark.asyncio
async def test_trivy_operator_report_labels_the_deployment_it_names(fake: KubeFake, tmp_path: Path) -> None:
    event = fixture("trivy-operator-input.json")
    await run(fake, tmp_path, "{}", event, **{
        "kube-target-kind": KIND, "kube-target-name": NAME, "kube-apply-to": "owner",
        "kube-actions": {"labels": {"trivy.vulnerable": "true",
                                    "trivy.image": "event.raw.report.artifact.repository:event.raw.report.artifact.tag",
                                    "trivy.critical": "event.raw.report.summary.criticalCount"}},
    })
    assert labels(fake, "deployments", "nginx") == {
        "app": "nginx", "trivy.vulnerable": "true", "trivy.image": "library_nginx_1.16", "trivy.critical": "2",
    }
    assert "trivy.vulnerable" not in labels(fake, "replicasets", "nginx-6d4cf56db6")
    assert "trivy.vulnerable" not in labels(fake, "deployments", "web")
    assert [(r.method, r.path) for r in fake.changes()] == [
        ("PATCH", "/apis/apps/v1/namespaces/default/deployments/nginx")
    ]


@pytest.mark.asyncio
async def test_trivy_operator_report_annotates_the_pods_of_the_workload(fake: KubeFake, tmp_path: Path) -> None:
    await run(fake, tmp_path, "{}", fixture("trivy-operator-input.json"), **{
        "kube-target-kind": KIND, "kube-target-name": NAME, "kube-apply-to": "pods",
        "kube-actions": {"annotations": {"security.herald.io/critical": "event.raw.report.summary.criticalCount"}},
    })
    for name in NGINX_PODS:
        assert annotations(fake, "pods", name) == {"security.herald.io/critical": "2"}
    assert annotations(fake, "pods", WEB_PODS[0]) == {}
    assert annotations(fake, "replicasets", "nginx-6d4cf56db6") == {}


@pytest.mark.asyncio
async def test_delete_pods_running_the_vulnerable_image(fake: KubeFake, tmp_path: Path) -> None:
    rs = fake.get("replicasets", "nginx-6d4cf56db6")
    assert rs is not None
    fake.add(pod("nginx-6d4cf56db6-debug", "busybox:1.36", {"app": "nginx", "pod-template-hash": "6d4cf56db6"},
                 ("ReplicaSet", rs)))
    fake.add(pod("lonely-nginx", "nginx:1.16", {"app": "other"}))  # same image, other workload
    await run(fake, tmp_path, "{}", fixture("trivy-operator-input.json"), **{
        "kube-target-kind": KIND, "kube-target-name": NAME, "kube-apply-to": "owner",
        "kube-delete-pods": True, "kube-delete-image": IMAGE,
    })
    assert all(fake.get("pods", n) is None for n in NGINX_PODS)
    assert fake.get("pods", "nginx-6d4cf56db6-debug") is not None
    assert fake.get("pods", "lonely-nginx") is not None
    assert all(fake.get("pods", n) is not None for n in WEB_PODS)
    assert fake.get("deployments", "nginx") is not None
    assert {r.method for r in fake.changes()} == {"DELETE"}


@pytest.mark.asyncio
async def test_delete_image_placeholder_resolving_to_nothing_deletes_nothing(fake: KubeFake, tmp_path: Path) -> None:
    with pytest.raises(PermanentActionError, match="kube-delete-image"):
        await run(fake, tmp_path, "{}", {"metadata": {}}, **{
            "kube-label-selector": "app=nginx", "kube-delete-pods": True,
            "kube-delete-image": "event.raw.report.artifact.repository",
        })
    assert fake.changes() == []


@pytest.mark.asyncio
async def test_named_target_not_found_is_permanent(fake: KubeFake, tmp_path: Path) -> None:
    event = {"metadata": {"labels": {"trivy-operator.resource.kind": "Deployment",
                                     "trivy-operator.resource.name": "gone"}}}
    with pytest.raises(PermanentActionError, match="deployments 'gone' not found in namespace 'default'"):
        await run(fake, tmp_path, "{}", event, **{
            "kube-target-kind": KIND, "kube-target-name": NAME, "kube-actions": {"labels": {"a": "b"}},
        })
    assert fake.changes() == []


@pytest.mark.asyncio
async def test_unsupported_kind_from_the_event_is_permanent(fake: KubeFake, tmp_path: Path) -> None:
    event = {"metadata": {"labels": {"trivy-operator.resource.kind": "CronJob",
                                     "trivy-operator.resource.name": "x"}}}
    with pytest.raises(PermanentActionError, match="'CronJob' is not one of"):
        await run(fake, tmp_path, "{}", event, **{
            "kube-target-kind": KIND, "kube-target-name": NAME, "kube-actions": {"labels": {"a": "b"}},
        })
    assert fake.requests == []


@pytest.mark.asyncio
async def test_statefulset_pods_and_strategic_patch(fake: KubeFake, tmp_path: Path) -> None:
    statefulset_with_pods(fake, "db", "postgres:16", replicas=2)
    await run(fake, tmp_path, **{
        "kube-target-kind": "StatefulSet", "kube-target-name": "db", "kube-apply-to": "pods",
        "kube-patch-type": "strategic", "kube-actions": {"labels": {"quarantine": "true"}},
    })
    assert labels(fake, "pods", "db-0")["quarantine"] == "true"
    assert labels(fake, "pods", "db-1")["quarantine"] == "true"
    assert {r.content_type for r in fake.changes()} == {"application/strategic-merge-patch+json"}


@pytest.mark.asyncio
async def test_selector_matching_nothing_succeeds_without_changes(fake: KubeFake, tmp_path: Path) -> None:
    await run(fake, tmp_path, **{"kube-label-selector": "app in (none, nothing)",
                                 "kube-actions": {"labels": {"a": "b"}}})
    assert fake.changes() == []
    assert fake.requests[0].query["labelSelector"] == "app in (none, nothing)"


# --- errors ----------------------------------------------------------------------------------

BASIC = {"kube-label-selector": "app=nginx", "kube-actions": {"labels": {"a": "b"}}}


@pytest.mark.asyncio
async def test_conflicts_are_retried_in_place(fake: KubeFake, tmp_path: Path) -> None:
    fake.inject("PATCH", 409, times=2)
    await run(fake, tmp_path, **BASIC)
    assert all(labels(fake, "pods", n)["a"] == "b" for n in NGINX_PODS)


@pytest.mark.asyncio
async def test_persistent_conflict_is_retryable(fake: KubeFake, tmp_path: Path) -> None:
    fake.inject("PATCH", 409, times=10)
    with pytest.raises(RetryableActionError, match="conflict 4 times") as err:
        await run(fake, tmp_path, **BASIC)
    assert err.value.status == 409


@pytest.mark.asyncio
@pytest.mark.parametrize(("method", "status", "kind"), [
    ("PATCH", 403, PermanentActionError), ("PATCH", 422, PermanentActionError),
    ("GET", 500, RetryableActionError), ("GET", 429, RetryableActionError), ("GET", 404, PermanentActionError),
])
async def test_api_errors_are_classified(fake: KubeFake, tmp_path: Path, method: str, status: int,
                                         kind: type[Exception]) -> None:
    fake.inject(method, status)
    with pytest.raises(kind) as err:
        await run(fake, tmp_path, **BASIC)
    assert f"HTTP {status}" in str(err.value)
    assert f"injected {status}" in str(err.value)  # the API's Status message is carried


@pytest.mark.asyncio
async def test_wrong_token_is_permanent(fake: KubeFake, tmp_path: Path) -> None:
    fake.token = "another"
    with pytest.raises(PermanentActionError, match="HTTP 401") as err:
        await run(fake, tmp_path, **BASIC)
    assert "herald-test-token" not in str(err.value)


@pytest.mark.asyncio
async def test_api_server_down_is_retryable(fake: KubeFake, tmp_path: Path) -> None:
    fake.stop()
    with pytest.raises(RetryableActionError, match="cannot reach the API server"):
        await run(fake, tmp_path, **BASIC)


@pytest.mark.asyncio
async def test_unreadable_kubeconfig_is_permanent(fake: KubeFake, tmp_path: Path) -> None:
    with pytest.raises(PermanentActionError, match="cannot load kube-config-file"):
        await run(fake, tmp_path, **{**BASIC, "kube-config-file": str(tmp_path / "missing")})
