"""A small Kubernetes API server for tests: the REST endpoints the kubernetes action calls.

It holds real object JSON (Pods with ownerReferences and containers, ReplicaSets, Deployments
with spec.template, StatefulSets, DaemonSets) and answers like the real API server:

- ``GET /api/v1/namespaces/{ns}/pods`` and ``/apis/apps/v1/namespaces/{ns}/{kind}`` list with
  ``labelSelector`` (``=``, ``==``, ``!=``, ``in``, ``notin``, ``key``, ``!key``) and
  ``fieldSelector`` (``metadata.name``, ``metadata.namespace``); a bad selector is a 400;
- ``GET``/``PATCH``/``DELETE`` one object; PATCH accepts ``application/merge-patch+json`` and
  ``application/strategic-merge-patch+json`` (anything else: 415), bumps ``resourceVersion``,
  answers 409 when the patch carries a stale ``resourceVersion``, and 422 when labels or
  annotations break Kubernetes' syntax;
- missing objects are 404 ``Status`` documents; a missing or wrong bearer token is 401;
- ``inject(method, status, times)`` makes the next requests of a method fail (409 conflicts,
  500s, 403s) so retries and classification can be tested.

It runs in a background thread with its own event loop, because the kubernetes client is
synchronous. Every request is recorded in ``requests`` for assertions.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

APPS_KINDS = {
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet",
}
KINDS = {"pods": "Pod", **APPS_KINDS}
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"

_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_QUALIFIED = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$"
)


def _valid_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return bool(_QUALIFIED.match(key)) and len(name) <= 63 and len(key) - len(name) <= 254


def _valid_value(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.match(value))


class SelectorError(ValueError):
    pass


def _split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses."""
    terms, depth, cur = [], 0, ""
    for ch in selector:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(cur.strip())
            cur = ""
        else:
            cur += ch
    terms.append(cur.strip())
    return terms


_SET_TERM = re.compile(r"^(\S+)\s+(in|notin)\s+\(([^()]*)\)$")
_EQ_TERM = re.compile(r"^([^=!\s]+)\s*(==|=|!=)\s*(\S*)$")


def parse_label_selector(selector: str) -> list[tuple[str, str, list[str]]]:
    """``app=x,tier in (a,b),!legacy`` -> [(key, op, values)]; raises SelectorError."""
    if not selector.strip():
        return []
    reqs: list[tuple[str, str, list[str]]] = []
    for term in _split_terms(selector):
        if m := _SET_TERM.match(term):
            key, op = m.group(1), m.group(2)
            values = [v.strip() for v in m.group(3).split(",")]
            if not values or any(not _valid_value(v) for v in values):
                raise SelectorError(f"invalid values in {term!r}")
        elif m := _EQ_TERM.match(term):
            key, op, values = m.group(1), {"==": "=", "=": "=", "!=": "!="}[m.group(2)], [m.group(3)]
            if not _valid_value(values[0]):
                raise SelectorError(f"invalid label value: {values[0]!r}")
        elif term.startswith("!") and _valid_key(term[1:].strip()):
            key, op, values = term[1:].strip(), "!exists", []
        elif term and _valid_key(term):
            key, op, values = term, "exists", []
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
        if not _valid_key(key):
            raise SelectorError(f"invalid label key {key!r}")
        reqs.append((key, op, values))
    return reqs


def selector_matches(reqs: list[tuple[str, str, list[str]]], labels: dict[str, str]) -> bool:
    for key, op, values in reqs:
        has, value = key in labels, labels.get(key)
        if op == "=":
            ok = has and value == values[0]
        elif op == "!=":
            ok = not has or value != values[0]
        elif op == "in":
            ok = has and value in values
        elif op == "notin":
            ok = not has or value not in values
        else:
            ok = has if op == "exists" else not has
        if not ok:
            return False
    return True


def _merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge_patch(out.get(key), value)
    return out


def _strategic_patch(target: Any, patch: Any) -> Any:
    """Strategic merge for what these objects hold: maps merge, lists of named items
    (containers, ports...) merge by ``name``, other lists replace."""
    if isinstance(patch, dict) and isinstance(target, dict):
        out = dict(target)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = _strategic_patch(out.get(key), value)
        return out
    if isinstance(patch, list) and isinstance(target, list) and all(
        isinstance(i, dict) and "name" in i for i in patch + target
    ):
        merged = {i["name"]: i for i in target}
        for item in patch:
            merged[item["name"]] = _strategic_patch(merged.get(item["name"]), item)
        return list(merged.values())
    return copy.deepcopy(patch)


def status_doc(code: int, reason: str, message: str, kind: str = "", name: str = "") -> dict[str, Any]:
    doc: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if kind or name:
        doc["details"] = {"name": name, "kind": kind}
    return doc


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any


class KubeFake:
    """The fake API server. ``objects[(kind, namespace, name)]`` is the stored JSON."""

    def __init__(self, token: str = "herald-test-token") -> None:
        self.token = token
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.requests: list[Seen] = []
        self.injected: list[tuple[str, int, int]] = []  # (method, status, remaining)
        self._version = 100
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    # -- objects ---------------------------------------------------------------------------

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        kind = next(k for k, v in KINDS.items() if v == obj["kind"])
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        meta.setdefault("uid", str(uuid.uuid4()))
        with self._lock:
            self._version += 1
            meta["resourceVersion"] = str(self._version)
            self.objects[(kind, meta["namespace"], meta["name"])] = obj
        return obj

    def get(self, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self._lock:
            obj = self.objects.get((kind, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def inject(self, method: str, status: int, times: int = 1) -> None:
        """The next ``times`` requests with ``method`` answer ``status``."""
        with self._lock:
            self.injected.append((method.upper(), status, times))

    def changes(self) -> list[Seen]:
        """Requests that could have changed something."""
        return [r for r in self.requests if r.method in ("PATCH", "DELETE", "PUT", "POST")]

    # -- server ----------------------------------------------------------------------------

    def start(self) -> KubeFake:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="kube-fake", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake Kubernetes API server did not start")
        return self

    def stop(self) -> None:
        """Idempotent: a test may stop the server early to see the API go away."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop, self._thread = None, None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "herald", "user": {"token": self.token}}],
            "contexts": [
                {"name": "fake", "context": {"cluster": "fake", "user": "herald", "namespace": namespace}}
            ],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))  # JSON is YAML
        return path

    # -- handling --------------------------------------------------------------------------

    def _route(self, path: str) -> tuple[str, str, str] | None:
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/(pods)(?:/([^/]+))?", path) or re.fullmatch(
            r"/apis/apps/v1/namespaces/([^/]+)/(deployments|statefulsets|daemonsets|replicasets)(?:/([^/]+))?",
            path,
        )
        return (m.group(2), m.group(1), m.group(3) or "") if m else None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        ctype = request.headers.get("Content-Type", "").split(";")[0].strip()
        with self._lock:
            self.requests.append(Seen(request.method, request.path, dict(request.query), ctype, body))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return self._json(401, status_doc(401, "Unauthorized", "Unauthorized"))
        injected = self._take_injected(request.method)
        if injected:
            reason = {409: "Conflict", 403: "Forbidden", 500: "InternalError", 429: "TooManyRequests"}
            doc = status_doc(injected, reason.get(injected, "Unknown"), f"injected {injected}")
            return self._json(injected, doc)
        route = self._route(request.path)
        if route is None:
            return self._json(404, status_doc(404, "NotFound", "the server could not find the requested resource"))
        kind, namespace, name = route
        if not name:
            if request.method != "GET":
                return self._json(405, status_doc(405, "MethodNotAllowed", "method not allowed"))
            return self._list(kind, namespace, request.query)
        with self._lock:
            obj = self.objects.get((kind, namespace, name))
        if obj is None:
            return self._json(404, status_doc(404, "NotFound", f'{kind} "{name}" not found', kind, name))
        if request.method == "GET":
            return self._json(200, obj)
        if request.method == "DELETE":
            with self._lock:
                del self.objects[(kind, namespace, name)]
            return self._json(200, obj)
        if request.method == "PATCH":
            return self._patch(kind, namespace, name, obj, ctype, body)
        return self._json(405, status_doc(405, "MethodNotAllowed", "method not allowed"))

    def _take_injected(self, method: str) -> int | None:
        with self._lock:
            for i, (m, status, remaining) in enumerate(self.injected):
                if m == method:
                    if remaining <= 1:
                        del self.injected[i]
                    else:
                        self.injected[i] = (m, status, remaining - 1)
                    return status
        return None

    def _list(self, kind: str, namespace: str, query: Any) -> web.Response:
        try:
            reqs = parse_label_selector(query.get("labelSelector", ""))
        except SelectorError as exc:
            return self._json(400, status_doc(400, "BadRequest", f"unable to parse requirement: {exc}"))
        fields: list[tuple[str, str, str]] = []
        for term in filter(None, query.get("fieldSelector", "").split(",")):
            m = re.fullmatch(r"(metadata\.name|metadata\.namespace)\s*(==|=|!=)\s*(.*)", term.strip())
            if not m:
                msg = f'"{term}" is not a known field selector: only "metadata.name", "metadata.namespace"'
                return self._json(400, status_doc(400, "BadRequest", msg))
            fields.append((m.group(1).split(".")[1], m.group(2), m.group(3)))
        with self._lock:
            items = [
                copy.deepcopy(o)
                for (k, ns, _), o in sorted(self.objects.items())
                if k == kind and ns == namespace
                and selector_matches(reqs, o["metadata"].get("labels") or {})
                and all((o["metadata"][f] == v) == (op != "!=") for f, op, v in fields)
            ]
            version = str(self._version)
        for item in items:  # list items carry neither kind nor apiVersion
            item.pop("kind", None)
            item.pop("apiVersion", None)
        api_version = "v1" if kind == "pods" else "apps/v1"
        doc = {"kind": f"{KINDS[kind]}List", "apiVersion": api_version,
               "metadata": {"resourceVersion": version}, "items": items}
        return self._json(200, doc)

    def _patch(self, kind: str, namespace: str, name: str, obj: dict[str, Any], ctype: str,
               body: Any) -> web.Response:
        if ctype not in (MERGE, STRATEGIC):
            msg = (
                "the body of the request was in an unknown format - accepted media types include: "
                f"{MERGE}, {STRATEGIC}"
            )
            return self._json(415, status_doc(415, "UnsupportedMediaType", msg))
        if not isinstance(body, dict):
            return self._json(400, status_doc(400, "BadRequest", "patch body must be a JSON object"))
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            msg = f'Operation cannot be fulfilled on {kind} "{name}": the object has been modified'
            return self._json(409, status_doc(409, "Conflict", msg, kind, name))
        patched = (_merge_patch if ctype == MERGE else _strategic_patch)(obj, body)
        meta = patched.get("metadata") or {}
        problems = [f"metadata.labels: Invalid value: {k!r}" for k in meta.get("labels") or {} if not _valid_key(k)]
        problems += [
            f"metadata.labels: Invalid value: {v!r}: a valid label must be an empty string or "
            "consist of alphanumeric characters, '-', '_' or '.'"
            for v in (meta.get("labels") or {}).values()
            if not isinstance(v, str) or not _valid_value(v)
        ]
        problems += [f"metadata.annotations: Invalid value: {k!r}" for k in meta.get("annotations") or {}
                     if not _valid_key(k)]
        if problems:
            msg = f'{KINDS[kind]} "{name}" is invalid: ' + "; ".join(problems)
            return self._json(422, status_doc(422, "Invalid", msg, kind, name))
        with self._lock:
            self._version += 1
            patched["metadata"]["resourceVersion"] = str(self._version)
            self.objects[(kind, namespace, name)] = patched
        return self._json(200, patched)

    @staticmethod
    def _json(status: int, doc: Any) -> web.Response:
        return web.Response(status=status, text=json.dumps(doc), content_type="application/json")


# -- real-looking objects -----------------------------------------------------------------------


def _owner(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": kind, "name": obj["metadata"]["name"],
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def pod(name: str, image: str, labels: dict[str, str], owner: tuple[str, dict[str, Any]] | None = None,
        namespace: str = "default") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "uid": str(uuid.uuid4()), "labels": dict(labels)}
    if owner is not None:
        meta["ownerReferences"] = [_owner(*owner)]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {
            "containers": [{"name": "main", "image": image, "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always",
            "nodeName": "node-1",
        },
        "status": {"phase": "Running", "podIP": "10.0.0.7"},
    }


def deployment_with_pods(fake: KubeFake, name: str, image: str, pod_hash: str, replicas: int = 2,
                         namespace: str = "default") -> dict[str, Any]:
    """A Deployment, its ReplicaSet ``<name>-<hash>`` and its pods, added to ``fake``."""
    labels = {"app": name}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "main", "image": image}]}}
    dep = fake.add({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels), "generation": 1},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": template,
                 "strategy": {"type": "RollingUpdate"}},
        "status": {"replicas": replicas, "readyReplicas": replicas},
    })
    rs_labels = {**labels, "pod-template-hash": pod_hash}
    rs = fake.add({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": f"{name}-{pod_hash}", "namespace": namespace, "labels": rs_labels,
                     "ownerReferences": [_owner("Deployment", dep)]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": rs_labels},
                 "template": {**template, "metadata": {"labels": rs_labels}}},
        "status": {"replicas": replicas},
    })
    for i in range(replicas):
        fake.add(pod(f"{name}-{pod_hash}-{i:05d}", image, rs_labels, ("ReplicaSet", rs), namespace))
    return dep


def statefulset_with_pods(fake: KubeFake, name: str, image: str, replicas: int = 1,
                          namespace: str = "default") -> dict[str, Any]:
    labels = {"app": name}
    sts = fake.add({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"replicas": replicas, "serviceName": name, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "main", "image": image}]}}},
    })
    for i in range(replicas):
        fake.add(pod(f"{name}-{i}", image, labels, ("StatefulSet", sts), namespace))
    return sts
