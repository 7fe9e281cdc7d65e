"""The Helm chart (deploy/helm/herald), checked with a real helm and the Kubernetes API's types.

helm is built from the Go module proxy by scripts/build-helm.sh (cached in .cache/helm); a helm
that cannot be built FAILS these tests. For the default values and for
tests/fixtures/helm-values-secure.yaml (Kafka SASL_SSL with mTLS, token rotation, HTTPS with
client certificates, autoscaling on lag, the ServiceMonitor):

- ``helm lint --strict`` passes and ``helm template`` renders;
- every rendered object loads into the ``kubernetes`` client's typed model of its kind with
  unknown fields treated as errors: ``strict_problems`` walks the model's ``attribute_map`` /
  ``openapi_types`` (only the API's JSON field names, so ``api_version`` for ``apiVersion`` is
  refused too), recursing into nested models, lists and maps; then the pydantic model validates
  types and required fields. The ServiceMonitor (a CRD, no typed model) is checked against a
  minimal schema of its own (``SERVICE_MONITOR_SCHEMA``);
- checks the API server makes beyond the schema (names, label values, selectors that select,
  ports and volumes that exist) and Herald's own: non-root, read-only root file system, no
  capabilities, probes on /healthz and /readyz, environment variables Herald reads, and the
  rendered cfg.yaml plus environment loading through Herald's config loader.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes.client as k8s
import pytest
import yaml

from actions import load_config
from app.config.settings import ENV_OVERRIDES
from tests.harness import FIXTURES, ROOT

CHART = ROOT / "deploy" / "helm" / "herald"
SECURE = FIXTURES / "helm-values-secure.yaml"
RELEASE, NAMESPACE = "sec", "herald"
# a cold build of helm (modules from the Go module proxy, compiling on two cores) takes minutes
pytestmark = pytest.mark.timeout(1800)

# --- helm ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm() -> str:
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-helm.sh")], check=False, capture_output=True,
                          text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"helm could not be built:\n{proc.stderr[-3000:]}", pytrace=False)
    return proc.stdout.strip().splitlines()[-1]


def run_helm(helm: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm, *args], check=False, capture_output=True, text=True, timeout=120, cwd=ROOT)


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    proc = run_helm(helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *args)
    assert proc.returncode == 0, f"helm template {' '.join(args)} failed:\n{proc.stderr}"
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d is not None]
    assert docs, "helm template rendered nothing"
    return docs


VALUES = {"default": (), "secure": ("-f", str(SECURE))}


@pytest.fixture(scope="module", params=sorted(VALUES))
def rendered(request: pytest.FixtureRequest, helm: str) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(helm, *VALUES[request.param])


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} rendered"
    return found[0]


# --- strict typed validation -----------------------------------------------------------------

PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "object": (object,),
    "datetime": (str,), "bytes": (str,),
}
LIST = re.compile(r"^List\[(.+)\]$")
DICT = re.compile(r"^Dict\[str, (.+)\]$")


def model_class(api_version: str, kind: str) -> type:
    """``apps/v1`` + ``Deployment`` -> ``kubernetes.client.V1Deployment``."""
    version = api_version.rsplit("/", 1)[-1]
    cls = getattr(k8s, version[:1].upper() + version[1:] + kind, None)
    assert cls is not None and hasattr(cls, "openapi_types"), f"no kubernetes client model for {api_version} {kind}"
    return cls


def _type_problems(type_name: str, value: Any, path: str) -> list[str]:
    if value is None:
        return []
    if m := LIST.match(type_name):
        if not isinstance(value, list):
            return [f"{path}: expected a list ({type_name}), got {type(value).__name__} {value!r}"]
        return [p for i, item in enumerate(value) for p in _type_problems(m.group(1), item, f"{path}[{i}]")]
    if m := DICT.match(type_name):
        if not isinstance(value, dict):
            return [f"{path}: expected a map ({type_name}), got {type(value).__name__} {value!r}"]
        out = [f"{path}: map key {k!r} is not a string" for k in value if not isinstance(k, str)]
        return out + [p for k, v in value.items() for p in _type_problems(m.group(1), v, f"{path}.{k}")]
    if type_name in PRIMITIVES:
        ok = isinstance(value, PRIMITIVES[type_name]) and not (
            type_name in ("int", "float") and isinstance(value, bool))
        return [] if ok else [f"{path}: expected {type_name}, got {type(value).__name__} {value!r}"]
    cls = getattr(k8s, type_name, None)
    if cls is None or not hasattr(cls, "attribute_map"):
        return [f"{path}: no kubernetes client model {type_name}"]
    return strict_problems(cls, value, path)


def strict_problems(cls: type, data: Any, path: str) -> list[str]:
    """Unknown fields (by the API's JSON names) and wrong JSON types anywhere below ``data``."""
    if not isinstance(data, dict):
        return [f"{path}: expected an object ({cls.__name__}), got {type(data).__name__} {data!r}"]
    attrs = {json_name: attr for attr, json_name in cls.attribute_map.items()}  # type: ignore[attr-defined]
    out = []
    for key, value in data.items():
        if key not in attrs:
            out.append(f"{path}.{key}: unknown field of {cls.__name__}")
            continue
        out.extend(_type_problems(cls.openapi_types[attrs[key]], value, f"{path}.{key}"))  # type: ignore[attr-defined]
    return out


def typed_problems(doc: dict[str, Any]) -> list[str]:
    """Everything wrong with ``doc`` as an object of its kind, or [] once the typed model accepts it."""
    where = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name')}"
    cls = model_class(doc.get("apiVersion", ""), doc.get("kind", ""))
    problems = strict_problems(cls, doc, where)
    if problems:
        return problems
    try:
        cls.model_validate(doc)  # type: ignore[attr-defined]  # types and required fields
    except Exception as exc:  # noqa: BLE001 - pydantic's ValidationError, reported
        return [f"{where}: {exc}"]
    return []


# The ServiceMonitor is a CRD (monitoring.coreos.com/v1): a minimal schema with no unknown fields,
# the fields this chart uses plus their common siblings; metadata and selector are typed below.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?"
                                          r"(([0-9]+)s)?(([0-9]+)ms)?)$"}
SERVICE_MONITOR_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
            "properties": {
                "jobLabel": {"type": "string"},
                "selector": {"type": "object"},
                "namespaceSelector": {
                    "type": "object", "additionalProperties": False,
                    "properties": {"any": {"type": "boolean"},
                                   "matchNames": {"type": "array", "items": {"type": "string"}}}},
                "endpoints": {
                    "type": "array", "minItems": 1,
                    "items": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"}, "targetPort": {"type": ["string", "integer"]},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": _DURATION, "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                            "relabelings": {"type": "array"}, "metricRelabelings": {"type": "array"},
                        },
                    },
                },
            },
        },
    },
}


def crd_problems(doc: dict[str, Any]) -> list[str]:
    where = f"ServiceMonitor/{(doc.get('metadata') or {}).get('name')}"
    validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
    out = [f"{where}.{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    out += strict_problems(k8s.V1ObjectMeta, doc.get("metadata"), f"{where}.metadata")
    out += strict_problems(k8s.V1LabelSelector, (doc.get("spec") or {}).get("selector"), f"{where}.spec.selector")
    return out


TYPED_KINDS = {"ConfigMap", "Service", "ServiceAccount", "Deployment", "PodDisruptionBudget",
               "HorizontalPodAutoscaler"}
CRD_KINDS = {"ServiceMonitor": crd_problems}  # no typed model: validated by a schema of our own


def object_problems(doc: dict[str, Any]) -> list[str]:
    kind = doc.get("kind")
    if kind in TYPED_KINDS:
        return typed_problems(doc)
    if kind in CRD_KINDS:
        return CRD_KINDS[kind](doc)
    return [f"{kind}: no validation for this kind (add it to TYPED_KINDS or CRD_KINDS)"]


# --- checks the API server makes beyond the schema --------------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
IANA_SVC_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def api_problems(docs: list[dict[str, Any]]) -> list[str]:
    out = []
    deployments = by_kind(docs, "Deployment")
    for doc in docs:
        meta, where = doc["metadata"], f"{doc['kind']}/{doc['metadata'].get('name')}"
        name = meta.get("name", "")
        pattern, limit = (DNS_LABEL, 63) if doc["kind"] == "Service" else (DNS_SUBDOMAIN, 253)
        if not pattern.match(name) or len(name) > limit:
            out.append(f"{where}: metadata.name {name!r} is not a valid name for a {doc['kind']}")
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                out.append(f"{where}: label {key}={value!r} is not a valid label value")
    for dep in deployments:
        where, spec = f"Deployment/{dep['metadata']['name']}", dep["spec"]["template"]["spec"]
        if not selects(dep["spec"]["selector"]["matchLabels"], dep["spec"]["template"]["metadata"]["labels"]):
            out.append(f"{where}: spec.selector does not select its own pod template")
        volumes = [v["name"] for v in spec.get("volumes", [])]
        if len(volumes) != len(set(volumes)):
            out.append(f"{where}: duplicate volume names {volumes}")
        out += [f"{where}: volume name {v!r} is not a DNS label" for v in volumes if not DNS_LABEL.match(v)]
        for c in spec["containers"]:
            ports = [p.get("name") for p in c.get("ports", [])]
            out += [f"{where}: port name {p!r} is not an IANA_SVC_NAME" for p in ports
                    if not (p and len(p) <= 15 and IANA_SVC_NAME.match(p))]
            for probe in ("livenessProbe", "readinessProbe"):
                port = (c.get(probe) or {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    out.append(f"{where}: {probe} port {port!r} is no port of container {c['name']}")
            out += [f"{where}: volumeMount {m['name']!r} names no volume" for m in c.get("volumeMounts", [])
                    if m["name"] not in volumes]
            out += [f"{where}: env name {e['name']!r} is invalid" for e in c.get("env", [])
                    if not ENV_NAME.match(e["name"])]
        for v in spec.get("volumes", []):
            sources = [s["secret"] for s in (v.get("projected") or {}).get("sources", [])] + (
                [v["secret"]] if "secret" in v else [])
            for s in sources:
                out += [f"{where}: volume {v['name']} item path {i['path']!r} must be relative"
                        for i in s.get("items", []) if i["path"].startswith("/") or ".." in i["path"]]
    pods = {d["metadata"]["name"]: d["spec"]["template"] for d in deployments}
    for svc in by_kind(docs, "Service"):
        chosen = [t for t in pods.values() if selects(svc["spec"]["selector"], t["metadata"]["labels"])]
        if not chosen:
            out.append(f"Service/{svc['metadata']['name']}: its selector selects no pod template")
        names = {p.get("name") for t in chosen for c in t["spec"]["containers"] for p in c.get("ports", [])}
        out += [f"Service/{svc['metadata']['name']}: targetPort {p['targetPort']!r} is no container port"
                for p in svc["spec"]["ports"] if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names]
    for pdb in by_kind(docs, "PodDisruptionBudget"):
        if not any(selects(pdb["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]) for t in pods.values()):
            out.append(f"PodDisruptionBudget/{pdb['metadata']['name']}: selects no pod template")
    for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
        ref = hpa["spec"]["scaleTargetRef"]
        if ref["kind"] != "Deployment" or ref["name"] not in pods:
            out.append(f"HorizontalPodAutoscaler/{hpa['metadata']['name']}: scaleTargetRef {ref} is not rendered")
    services = by_kind(docs, "Service")
    for sm in by_kind(docs, "ServiceMonitor"):
        chosen = [s for s in services if selects(sm["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])]
        ports = {p["name"] for s in chosen for p in s["spec"]["ports"]}
        out += [f"ServiceMonitor/{sm['metadata']['name']}: endpoint port {e['port']!r} is on no selected Service"
                for e in sm["spec"]["endpoints"] if e["port"] not in ports]
    return out


# --- tests: lint, render, validate ----------------------------------------------------------


@pytest.mark.parametrize("values", sorted(VALUES))
def test_helm_lint_strict(helm: str, values: str) -> None:
    proc = run_helm(helm, "lint", "--strict", str(CHART), *VALUES[values])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


def test_every_rendered_object_is_a_valid_kubernetes_object(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    problems = [p for d in docs for p in object_problems(d)] + api_problems(docs)
    assert not problems, f"{name} values:\n" + "\n".join(problems)
    kinds = sorted({d["kind"] for d in docs})
    expected = {"ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"}
    if name == "secure":
        expected |= {"HorizontalPodAutoscaler", "ServiceMonitor"}
    assert set(kinds) == expected, kinds


def test_unknown_fields_wrong_types_and_missing_fields_are_rejected(helm: str) -> None:
    docs = render(helm)
    dep = copy.deepcopy(one(docs, "Deployment", f"{RELEASE}-herald-worker"))
    assert typed_problems(dep) == []

    typo = copy.deepcopy(dep)
    typo["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {"runAsNonRoot": True}
    assert typed_problems(typo) == [
        (f"Deployment/{RELEASE}-herald-worker.spec.template.spec.containers[0].securityContex: "
         "unknown field of V1Container")]

    snake = copy.deepcopy(dep)  # the python client's attribute name (its model accepts it), not the API's
    container = snake["spec"]["template"]["spec"]["containers"][0]
    container["image_pull_policy"] = container.pop("imagePullPolicy")
    assert typed_problems(snake) == [
        (f"Deployment/{RELEASE}-herald-worker.spec.template.spec.containers[0].image_pull_policy: "
         "unknown field of V1Container")]

    nested = copy.deepcopy(dep)  # deep inside a list inside a map-typed model
    nested["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"][0]["mode"] = 0o444
    nested["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"][0]["fileMode"] = 0o444
    assert typed_problems(nested) == [
        (f"Deployment/{RELEASE}-herald-worker.spec.template.spec.volumes[0].configMap.items[0].fileMode: "
         "unknown field of V1KeyToPath")]

    wrong = copy.deepcopy(dep)
    wrong["spec"]["replicas"] = "2"
    assert typed_problems(wrong) == [f"Deployment/{RELEASE}-herald-worker.spec.replicas: expected int, got str '2'"]

    missing = copy.deepcopy(dep)
    del missing["spec"]["template"]["spec"]["containers"][0]["name"]
    problems = typed_problems(missing)
    assert len(problems) == 1 and "containers.0.name" in problems[0] and "Field required" in problems[0]

    sm = one(render(helm, "-f", str(SECURE)), "ServiceMonitor", f"{RELEASE}-herald")
    bad = copy.deepcopy(sm)
    bad["spec"]["endpoints"][0]["intervall"] = "30s"
    bad["metadata"]["label"] = {"x": "y"}
    problems = crd_problems(bad)
    assert any("spec.endpoints.0" in p and "'intervall' was unexpected" in p for p in problems), problems
    assert any("metadata.label: unknown field of V1ObjectMeta" in p for p in problems), problems

    assert object_problems({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}) == [
        "Secret: no validation for this kind (add it to TYPED_KINDS or CRD_KINDS)"]


def test_a_values_typo_reaches_the_rendered_object_and_is_rejected(helm: str) -> None:
    docs = render(helm, "--set-json", 'herald.extraEnv=[{"name": "TZ", "valu": "UTC"}]')
    dep = one(docs, "Deployment", f"{RELEASE}-herald-bridge")
    i = [e["name"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]].index("TZ")
    assert typed_problems(dep) == [
        (f"Deployment/{RELEASE}-herald-bridge.spec.template.spec.containers[0].env[{i}].valu: "
         "unknown field of V1EnvVar")]


def test_api_checks_catch_broken_references(helm: str) -> None:
    docs = copy.deepcopy(render(helm))
    dep = one(docs, "Deployment", f"{RELEASE}-herald-bridge")
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"]["httpGet"]["port"] = "metrics"
    container["volumeMounts"].append({"name": "cache", "mountPath": "/cache"})
    one(docs, "Service", f"{RELEASE}-herald-worker")["spec"]["selector"]["app.kubernetes.io/component"] = "workers"
    assert sorted(api_problems(docs)) == sorted([
        f"Deployment/{RELEASE}-herald-bridge: readinessProbe port 'metrics' is no port of container bridge",
        f"Deployment/{RELEASE}-herald-bridge: volumeMount 'cache' names no volume",
        f"Service/{RELEASE}-herald-worker: its selector selects no pod template",
        f"Service/{RELEASE}-herald-worker: targetPort 'admin' is no container port",
    ])


# --- Herald's requirements -------------------------------------------------------------------


def test_pods_run_non_root_read_only_without_capabilities_and_probe_health(
        rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for dep in by_kind(docs, "Deployment"):
        pod = dep["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1099
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                          "capabilities": {"drop": ["ALL"]}}, (dep["metadata"]["name"], sc)
            assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
            assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]


def test_worker_scales_on_consumer_lag_and_disruptions_are_bounded(helm: str) -> None:
    docs = render(helm, "-f", str(SECURE))
    worker = one(docs, "Deployment", f"{RELEASE}-herald-worker")
    assert "replicas" not in worker["spec"], "the HPA owns the worker's replica count"
    hpa = one(docs, "HorizontalPodAutoscaler", f"{RELEASE}-herald-worker")
    assert hpa["spec"]["minReplicas"] == 2 and hpa["spec"]["maxReplicas"] == 12
    assert hpa["spec"]["metrics"] == [{"type": "External", "external": {
        "metric": {"name": "herald_consumer_lag_messages",
                   "selector": {"matchLabels": {"service": f"{RELEASE}-herald-worker"}}},
        "target": {"type": "AverageValue", "averageValue": "500"}}}]
    assert one(docs, "PodDisruptionBudget", f"{RELEASE}-herald-bridge")["spec"]["minAvailable"] == 2
    assert one(docs, "PodDisruptionBudget", f"{RELEASE}-herald-worker")["spec"]["maxUnavailable"] == 1
    sm = one(docs, "ServiceMonitor", f"{RELEASE}-herald")
    assert [(e["port"], e["path"]) for e in sm["spec"]["endpoints"]] == [("http", "/metrics"), ("admin", "/metrics")]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # defaults: fixed replicas, no HPA, no ServiceMonitor (no CRD needed)
    default = render(helm)
    assert one(default, "Deployment", f"{RELEASE}-herald-worker")["spec"]["replicas"] == 2
    assert not by_kind(default, "HorizontalPodAutoscaler") and not by_kind(default, "ServiceMonitor")


@pytest.mark.parametrize(("args", "needles", "lint_fails"), [
    # values.schema.json: helm template and helm lint refuse them, naming the value's path
    (("--set", "bridge.replicas=3"), ["at '/bridge': additional properties 'replicas' not allowed"], True),
    (("--set", "bridge.auth.bearerTokensSecret.name="),
     ["at '/bridge/auth/bearerTokensSecret/name': minLength: got 0, want 1"], True),
    (("--set", "kafka.sasl.mechanism=SCRAM-SHA-512", "--set", "kafka.sasl.username=u"),
     ["at '/kafka/sasl/passwordSecret/name': minLength: got 0, want 1"], True),
    (("--set", "kafka.sasl.mechanism=OAUTHBEARER", "--set", "kafka.sasl.oauthbearer.tokenEndpointUrl=http://idp"),
     ["at '/kafka/sasl/oauthbearer/clientId': minLength: got 0, want 1",
      "at '/kafka/sasl/oauthbearer/tokenEndpointUrl': 'http://idp' does not match pattern '^https://'"], True),
    (("--set", "kafka.securityProtocol=TLS"), ["at '/kafka/securityProtocol': value must be one of"], True),
    (("--set", "bridge.https.enabled=true"), ["at '/bridge/https/secretName': minLength: got 0, want 1"], True),
    # the templates' own checks (helm lint reports a template's fail() as INFO, not as a failure)
    (("--set", "worker.autoscaling.enabled=true", "--set", "worker.autoscaling.minReplicas=5",
      "--set", "worker.autoscaling.maxReplicas=3"), ["minReplicas must not exceed maxReplicas"], False),
    (("--set", "config.cfgYaml=routes: [unclosed"), ["config.cfgYaml is not valid YAML"], False),
])
def test_bad_values_fail_rendering_naming_the_value(
        helm: str, args: tuple[str, ...], needles: list[str], lint_fails: bool) -> None:
    proc = run_helm(helm, "template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0 and all(n in proc.stderr for n in needles), proc.stderr
    lint = run_helm(helm, "lint", "--strict", str(CHART), *args)
    assert all(n in lint.stdout + lint.stderr for n in needles), lint.stdout + lint.stderr
    assert (lint.returncode != 0) is lint_fails, lint.stdout + lint.stderr


def test_the_templates_refuse_an_unauthenticated_bridge_even_without_the_schema(helm: str, tmp_path: Path) -> None:
    """The chart's fail() stands behind values.schema.json (e.g. a parent chart's own values)."""
    chart = tmp_path / "herald"
    shutil.copytree(CHART, chart)
    (chart / "values.schema.json").unlink()
    proc = run_helm(helm, "template", RELEASE, str(chart), "--set", "bridge.auth.bearerTokensSecret.name=")
    assert proc.returncode != 0
    assert "the bridge listens on the pod's 0.0.0.0: set bridge.auth.bearerTokensSecret" in proc.stderr, proc.stderr
    proc = run_helm(helm, "template", RELEASE, str(chart), "--set", "kafka.sasl.mechanism=PLAIN",
                    "--set", "kafka.sasl.username=u")
    assert proc.returncode != 0
    assert "kafka.sasl.passwordSecret.name is required with kafka.sasl.mechanism" in proc.stderr, proc.stderr


def image_env() -> dict[str, str]:
    """The ENV of the Dockerfile's runtime stage (the chart's pods run that image)."""
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    runtime = text[text.rindex("\nFROM "):]
    env = {}
    for line in runtime.splitlines():
        if line.startswith("ENV "):
            env.update(dict(pair.split("=", 1) for pair in line[4:].split()))
    assert "POSTEE_CFG" in env and "REGO_FILTERS_PATH" in env, env
    return env


# Herald reads these besides the ENV_OVERRIDES of app/config/settings.py
OTHER_ENV = {"POSTEE_CFG", "AQUAALERT_CERT_PEM", "AQUAALERT_KEY_PEM", "HERALD_LOG_FORMAT", "TZ",
             "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}


def container_env(dep: dict[str, Any]) -> dict[str, str]:
    env = dep["spec"]["template"]["spec"]["containers"][0]["env"]
    assert all("valueFrom" not in e for e in env), "secrets are mounted files, not env values"
    return {e["name"]: e["value"] for e in env}


def mount_tree(docs: list[dict[str, Any]], dep: dict[str, Any], root: Path) -> dict[str, str]:
    """Lay out under ``root`` what the pod would see at its mount paths: the ConfigMaps' files and
    a made-up value for each Secret item; returns {pod path: local path}."""
    configmaps = {c["metadata"]["name"]: c["data"] for c in by_kind(docs, "ConfigMap")}
    pod = dep["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mapping = {}
    for m in pod["containers"][0]["volumeMounts"]:
        local = root / m["mountPath"].strip("/").replace("/", "_")
        local.mkdir(parents=True, exist_ok=True)
        mapping[m["mountPath"]] = str(local)
        v = volumes[m["name"]]
        if "configMap" in v:
            data = configmaps[v["configMap"]["name"]]
            items = v["configMap"].get("items") or [{"key": k, "path": k} for k in data]
            for item in items:
                (local / item["path"]).write_text(data[item["key"]])
        sources = [s["secret"] for s in (v.get("projected") or {}).get("sources", [])] + (
            [v["secret"]] if "secret" in v else [])
        for s in sources:
            for item in s.get("items", []):
                (local / item["path"]).write_text(f"secret-{s.get('name') or s.get('secretName')}-{item['key']}\n")
    return mapping


def pod_config(docs: list[dict[str, Any]], name: str, root: Path) -> Any:
    """Herald's config as the container ``name`` would load it (rendered env, mounted files)."""
    dep = one(docs, "Deployment", f"{RELEASE}-herald-{name}")
    env = container_env(dep)
    unknown = set(env) - {n for names, _ in ENV_OVERRIDES for n in names} - OTHER_ENV
    assert not unknown, f"{name}: environment variables Herald does not read: {sorted(unknown)}"
    mapping = mount_tree(docs, dep, root / name)
    env = {**{k: v for k, v in image_env().items() if k not in ("PATH", "HOME")}, **env}

    def local(path: str) -> str:
        for pod_path, here in sorted(mapping.items(), key=lambda kv: -len(kv[0])):
            if path == pod_path or path.startswith(pod_path + "/"):
                return here + path[len(pod_path):]
        return path

    for key, value in env.items():  # paths, file:paths and comma-separated lists of them
        env[key] = ",".join("file:" + local(v[5:]) if v.startswith("file:") else local(v) for v in value.split(","))
    return load_config(env["POSTEE_CFG"], environ=env), env


def test_rendered_env_and_config_load_in_herald_default(helm: str, tmp_path: Path) -> None:
    docs = render(helm)
    for name in ("bridge", "worker"):
        config, env = pod_config(docs, name, tmp_path)
        h = config.herald
        assert h.kafka_bootstrap_servers == "kafka:9092" and h.kafka.security_protocol == "PLAINTEXT"
        assert [t.reveal() for t in h.auth.bearer_tokens] == ["secret-herald-auth-bearer-token"]
        assert list(config.routes) == ["stdout"] and list(config.actions) == ["stdout"]
    assert env["HERALD_ADMIN_LISTEN"] == "0.0.0.0:8083"
    bridge_env = container_env(one(docs, "Deployment", f"{RELEASE}-herald-bridge"))
    assert bridge_env["POSTEE_HTTP"] == "0.0.0.0:8082" and bridge_env["HERALD_SPOOL_DIR"] == "/var/spool/herald"


def test_rendered_env_and_config_load_in_herald_secure(helm: str, tmp_path: Path) -> None:
    docs = render(helm, "-f", str(SECURE))
    for name in ("bridge", "worker"):
        config, _ = pod_config(docs, name, tmp_path)
        h, k = config.herald, config.herald.kafka
        assert h.kafka_bootstrap_servers.startswith("kafka-0.kafka:9096,")
        assert (h.topic_prefix, h.partitions, h.consumer_group) == ("sec.herald.", 12, "herald-prod")
        assert (k.security_protocol, k.sasl_mechanism, k.sasl_username) == ("SASL_SSL", "SCRAM-SHA-512", "herald")
        assert k.sasl_password.reveal() == "secret-herald-kafka-user-password"
        assert Path(k.ssl_ca_location).read_text() == "secret-kafka-cluster-ca-cert-ca.crt\n"
        assert Path(k.ssl_certificate_location).name == "client.crt" and Path(k.ssl_key_location).name == "client.key"
        assert k.ssl_key_password.reveal() == "secret-herald-kafka-client-tls-password-password"
        assert k.properties == {"client.rack": "zone-a", "socket.keepalive.enable": True}
        assert [t.reveal() for t in h.auth.bearer_tokens] == [
            "secret-herald-bridge-tokens-current", "secret-herald-bridge-tokens-previous"]
        assert [t.reveal() for t in h.auth.hmac_keys] == ["secret-herald-bridge-hmac-github"]
        assert list(config.routes) == ["critical"] and list(config.actions) == ["secops-webhook"]
        assert list(config.templates) == ["vuls-short"]
        assert (Path(h.filters_path) / "allowed-registries.rego").read_text().startswith("package postee")
        assert any((Path(d) / "vuls-short.rego").is_file() for d in h.template_dirs), h.template_dirs
    bridge_env = container_env(one(docs, "Deployment", f"{RELEASE}-herald-bridge"))
    assert bridge_env["POSTEE_HTTPS"] == "0.0.0.0:8445"
    assert bridge_env["HERALD_AUTH_CLIENT_CA"] == "/etc/herald/https/client-ca.crt"
    image = one(docs, "Deployment", f"{RELEASE}-herald-bridge")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/security/herald@sha256:" + "0123456789abcdef" * 4


def test_oauthbearer_values_render_valid_objects_and_load_in_herald(helm: str, tmp_path: Path) -> None:
    docs = render(helm, "--set", "kafka.securityProtocol=SASL_SSL", "--set", "kafka.sasl.mechanism=OAUTHBEARER",
                  "--set", "kafka.sasl.oauthbearer.clientId=herald",
                  "--set", "kafka.sasl.oauthbearer.tokenEndpointUrl=https://idp.example.com/token",
                  "--set", "kafka.sasl.oauthbearer.scope=kafka",
                  "--set", "kafka.sasl.oauthbearer.clientSecretSecret.name=herald-oidc")
    problems = [p for d in docs for p in object_problems(d)] + api_problems(docs)
    assert not problems, "\n".join(problems)
    for name in ("bridge", "worker"):
        config, env = pod_config(docs, name, tmp_path)
        k = config.herald.kafka
        assert (k.security_protocol, k.sasl_mechanism, k.oauthbearer_client_id) == ("SASL_SSL", "OAUTHBEARER", "herald")
        assert k.oauthbearer_token_endpoint_url == "https://idp.example.com/token" and k.oauthbearer_scope == "kafka"
        assert k.oauthbearer_client_secret.reveal() == "secret-herald-oidc-client-secret"
        assert "HERALD_KAFKA_SASL_PASSWORD" not in env and "HERALD_KAFKA_SASL_USERNAME" not in env
