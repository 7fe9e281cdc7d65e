"""What an event is about: its source, entity (host, container, pod, image, namespace), severity
and a one-line title, for the timeline. Field names are those the sensors really send (see the
fixtures under shared/fixtures and each sensor's output documentation).

``--by`` takes a known entity name or any path: ``Context.hostName``,
``output_fields["k8s.pod.name"]``, ``Results[0].Target``. The first non-empty candidate wins, so
one timeline can mix Tracee, Falco, Trivy and Aqua events.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from app.errors import HeraldError

Path = tuple[str | int, ...]

_SEGMENT = re.compile(r"""\s*(?:\[\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)'|(-?\d+))\s*\]|([^.\[\]]+))\s*(\.)?""")


def parse_path(text: str) -> Path:
    """``a.b["c.d"][0]`` -> ("a", "b", "c.d", 0); a leading ``input.`` is dropped (Rego habit)."""
    src = text.strip()
    if not src:
        raise HeraldError("--by: an empty path")
    out: list[str | int] = []
    pos = 0
    while pos < len(src):
        m = _SEGMENT.match(src, pos)
        if not m or m.end() == pos:
            raise HeraldError(f"--by: cannot parse the path {text!r} at character {pos + 1}")
        dq, sq, idx, name, _dot = m.groups()
        if idx is not None:
            out.append(int(idx))
        else:
            out.append(dq.replace('\\"', '"') if dq is not None else sq if sq is not None else name)
        pos = m.end()
    if out and out[0] == "input" and len(out) > 1:
        out = out[1:]
    return tuple(out)


def get_path(event: Any, path: Path) -> Any:
    node = event
    for key in path:
        if isinstance(key, int):
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                return None
            node = node[key]
        elif isinstance(node, dict):
            node = node.get(key)
        else:
            return None
    return node


def _scalar(value: Any) -> str:
    if value is None or isinstance(value, (dict, list)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _image(repository: Any, tag: Any) -> str:
    repo, t = _scalar(repository), _scalar(tag)
    return f"{repo}:{t}" if repo and t else repo


# Candidate extractors per entity, in the order tried.
_P = parse_path
Extractor = Callable[[dict[str, Any]], str]


def _getter(text: str) -> Extractor:
    path = _P(text)
    return lambda e: _scalar(get_path(e, path))


def _paths(*texts: str) -> list[Extractor]:
    return [_getter(t) for t in texts]


ENTITIES: dict[str, list[Extractor]] = {
    "host": _paths(
        "Context.hostName",  # Tracee finding
        "hostName",  # Tracee event (v0.20+)
        "hostname",  # Falco
        'output_fields["host.hostname"]',
        "host_name",  # Aqua incident
        "host",  # Aqua runtime audit
        'metadata.labels["kubernetes.io/hostname"]',
    ),
    "container": _paths(
        "Context.container.id", "Context.containerId", "container.id", "containerId",
        'output_fields["container.id"]', "container_id", "container",
    ),
    "pod": _paths(
        "Context.podName", "Context.kubernetes.podName", "kubernetes.podName", "podName",
        'output_fields["k8s.pod.name"]', 'metadata.labels["trivy-operator.resource.name"]', "pod",
    ),
    "namespace": _paths(
        "Context.podNamespace", "Context.kubernetes.podNamespace", "kubernetes.podNamespace", "podNamespace",
        'output_fields["k8s.ns.name"]', "metadata.namespace", "namespace",
    ),
    "image": _paths("Context.containerImage", "Context.container.image", "container.image", "containerImage")
    + [
        lambda e: _image(get_path(e, ("output_fields", "container.image.repository")),
                         get_path(e, ("output_fields", "container.image.tag"))),
        lambda e: _image(get_path(e, ("report", "artifact", "repository")), get_path(e, ("report", "artifact", "tag"))),
    ]
    + _paths("ArtifactName", "image", "resource.name"),
}


def entity_extractor(by: str | None) -> Callable[[dict[str, Any]], str]:
    """A function event -> entity string ('' when the event has none)."""
    if not by:
        return lambda e: ""
    candidates = ENTITIES.get(by)
    if candidates is None:
        path = parse_path(by)
        return lambda e: _scalar(get_path(e, path))

    def extract(event: dict[str, Any]) -> str:
        for candidate in candidates:
            value = candidate(event)
            if value:
                return value
        return ""

    return extract


def source_of(event: dict[str, Any]) -> str:
    if "SigMetadata" in event or (isinstance(event.get("Context"), dict) and "eventName" in event["Context"]):
        return "tracee"
    if "eventName" in event and ("timestamp" in event or "hostName" in event):
        return "tracee"
    if "rule" in event and "priority" in event and "output" in event:
        return "falco"
    if "SchemaVersion" in event and "ArtifactName" in event:
        return "trivy"
    if isinstance(event.get("report"), dict) and str(event.get("kind", "")).endswith("Report"):
        return "trivy-operator"
    if "event_category" in event or "severity_score" in event:
        return "aqua-incident"
    if "insight" in event:
        return "aqua-insight"
    if "image" in event and ("scan_started" in event or "vulnerability_summary" in event or "resources" in event):
        return "aqua"
    return "other"


SEVERITIES = ("critical", "high", "medium", "low", "info", "unknown")
_FALCO = {
    "emergency": "critical", "alert": "critical", "critical": "critical", "error": "high",
    "warning": "medium", "notice": "low", "informational": "info", "info": "info", "debug": "info",
}
# Tracee signature severities: 0 info, 1 low, 2 medium, 3 high, 4 critical.
_TRACEE = {0: "info", 1: "low", 2: "medium", 3: "high", 4: "critical"}


def _worst_of_counts(counts: dict[str, Any], keys: dict[str, str]) -> str:
    for key, level in keys.items():
        value = counts.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return level
    return "info" if counts else "unknown"


def severity_of(event: dict[str, Any], source: str) -> str:
    if source == "tracee":
        props = get_path(event, ("SigMetadata", "Properties")) or get_path(event, ("metadata", "Properties")) or {}
        sev = props.get("Severity") if isinstance(props, dict) else None
        if isinstance(sev, int) and not isinstance(sev, bool):
            return _TRACEE.get(sev, "critical" if sev > 4 else "unknown")
        return "unknown"
    if source == "falco":
        return _FALCO.get(str(event.get("priority", "")).lower(), "unknown")
    if source == "trivy":
        levels = {str(v.get("Severity", "")).lower() for r in event.get("Results") or [] if isinstance(r, dict)
                  for v in r.get("Vulnerabilities") or [] if isinstance(v, dict)}
        return next((s for s in SEVERITIES[:4] if s in levels), "info")
    if source == "trivy-operator":
        summary = get_path(event, ("report", "summary"))
        return _worst_of_counts(summary if isinstance(summary, dict) else {}, {
            "criticalCount": "critical", "highCount": "high", "mediumCount": "medium", "lowCount": "low"})
    if source == "aqua":
        summary = event.get("vulnerability_summary")
        return _worst_of_counts(summary if isinstance(summary, dict) else {}, {
            "critical": "critical", "high": "high", "medium": "medium", "low": "low"})
    if source == "aqua-incident":
        score = event.get("severity_score")
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return "critical" if score >= 4 else "high" if score >= 3 else "medium" if score >= 2 else "low"
    sev = event.get("severity")
    if isinstance(sev, str) and sev.lower() in SEVERITIES:
        return sev.lower()
    return "unknown"


def title_of(event: dict[str, Any], source: str) -> str:
    candidates: dict[str, tuple[Path, ...]] = {
        "tracee": (("SigMetadata", "Name"), ("metadata", "Description"), ("eventName",), ("Context", "eventName")),
        "falco": (("rule",),),
        "trivy": (("ArtifactName",),),
        "trivy-operator": (("metadata", "name"),),
        "aqua": (("image",),),
        "aqua-incident": (("name",),),
        "aqua-insight": (("insight", "description"),),
    }
    for path in candidates.get(source, ()) + (("title",), ("name",)):
        text = _scalar(get_path(event, path))
        if text:
            return text[:200]
    return ""
