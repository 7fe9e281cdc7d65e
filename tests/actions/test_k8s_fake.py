"""The fake Kubernetes API answers like the real one where the kubernetes action relies on it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.k8s_fake import KubeFake, SelectorError, deployment_with_pods, parse_label_selector, selector_matches


@pytest.fixture
def fake() -> Iterator[KubeFake]:
    server = KubeFake().start()
    deployment_with_pods(server, "nginx", "nginx:1.16", "abc")
    yield server
    server.stop()


def call(fake: KubeFake, method: str, path: str, body: Any = None, ctype: str = "application/json",
         token: str | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(fake.url + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token or fake.token}")
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize(
    ("selector", "labels", "match"),
    [
        ("app=a", {"app": "a"}, True),
        ("app==a", {"app": "b"}, False),
        ("app!=a", {}, True),
        ("app in (a, b),tier", {"app": "b", "tier": ""}, True),
        ("app notin (a,b)", {"app": "a"}, False),
        ("!legacy", {"legacy": "1"}, False),
        ("app", {"other": "x"}, False),
    ],
)
def test_label_selector(selector: str, labels: dict[str, str], match: bool) -> None:
    assert selector_matches(parse_label_selector(selector), labels) is match


@pytest.mark.parametrize("bad", ["app=a b", "app in a", "=x", "app=not/valid"])
def test_bad_selectors(bad: str) -> None:
    with pytest.raises(SelectorError):
        parse_label_selector(bad)


def test_list_get_patch_delete(fake: KubeFake) -> None:
    status, doc = call(fake, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3Dnginx")
    assert status == 200 and doc["kind"] == "PodList" and len(doc["items"]) == 2
    assert "kind" not in doc["items"][0]
    status, doc = call(fake, "GET", "/api/v1/namespaces/default/pods?labelSelector=app%3D%3D")
    assert status == 200 and doc["items"] == []
    status, doc = call(fake, "GET", "/api/v1/namespaces/default/pods?labelSelector=app+in+a")
    assert (status, doc["reason"]) == (400, "BadRequest")
    status, doc = call(fake, "GET", "/apis/apps/v1/namespaces/default/deployments/none")
    assert (status, doc["reason"], doc["details"]["name"]) == (404, "NotFound", "none")

    path = "/apis/apps/v1/namespaces/default/deployments/nginx"
    patch = {"metadata": {"labels": {"x": "1"}}}
    assert call(fake, "PATCH", path, patch)[0] == 415  # application/json is not a patch type
    status, doc = call(fake, "PATCH", path, patch, "application/merge-patch+json")
    assert status == 200 and doc["metadata"]["labels"] == {"app": "nginx", "x": "1"}
    stale = {"metadata": {"resourceVersion": "1", "labels": {"y": "2"}}}
    assert call(fake, "PATCH", path, stale, "application/merge-patch+json")[0] == 409
    bad = {"metadata": {"labels": {"x": "not valid!"}}}
    status, doc = call(fake, "PATCH", path, bad, "application/strategic-merge-patch+json")
    assert (status, doc["reason"]) == (422, "Invalid")

    assert call(fake, "DELETE", "/api/v1/namespaces/default/pods/nginx-abc-00000")[0] == 200
    assert call(fake, "DELETE", "/api/v1/namespaces/default/pods/nginx-abc-00000")[0] == 404
    assert call(fake, "GET", "/api/v1/namespaces/default/pods", token="wrong")[0] == 401
